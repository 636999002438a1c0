"""olmix-tui: the command line and the Textual app over the mixing engine."""
