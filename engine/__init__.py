"""The olmix mixing engine: project folder, data, swarms, proxy training, regression, proposers, reuse.

This package never imports a UI library (textual, typer); the CLI and the TUI sit on top of it.
"""

__version__ = "0.1.0"
