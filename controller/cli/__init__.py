"""The `cutover` commands, the demo among them; `app` is the command line."""

from controller.cli.app import app, main

__all__ = ["app", "main"]
