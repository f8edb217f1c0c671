"""`python -m mailer` runs the command line."""

from mailer.cli.main import main

if __name__ == "__main__":  # not when a worker process (mailer.reading.workers) imports it again
    main()
