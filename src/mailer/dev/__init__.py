"""Trying it out on one machine: the dev mail server, the demo and the script it plays."""
