"""The ``careflow`` command line: the one place that knows every package.

A thin skin over library calls (careflow/, careflow/segments/, careflow/channels/, careflow/flows/,
careflow/importers/, careflow/demo/); see careflow/cli/main.py for the top-level group and one
module per command group.
"""

from careflow.cli.main import main

__all__ = ["main"]
