"""`python -m lampstand.clients` runs the CLI."""

from .cli import main

main()
