"""The ``careflow`` command line: the one place that knows every package.

A thin skin over library calls (careflow/, segments/, channels/, flows/,
importers/, demo/); see cli/main.py for the top-level group and one
module per command group.
"""

from cli.main import main

__all__ = ["main"]
