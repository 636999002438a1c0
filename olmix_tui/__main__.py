"""`python -m olmix_tui` is the `olmix-tui` command."""

from olmix_tui.cli import main

main()
