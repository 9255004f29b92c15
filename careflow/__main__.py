"""``python -m careflow``: the careflow command."""

from careflow.cli.main import main

main()
