"""olmix-tui: the command line and (soon) the Textual app over the mixing engine."""
