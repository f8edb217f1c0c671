"""The command line: the click group (main) and one module of commands per side."""
