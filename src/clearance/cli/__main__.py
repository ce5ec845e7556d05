"""`python -m clearance.cli` is the `clearance` command."""

from . import main

main()
