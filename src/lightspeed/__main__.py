"""``python -m lightspeed`` runs the ``lightspeed`` command."""

from lightspeed.cli.main import main

main()
