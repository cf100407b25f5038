"""``python -m lightspeed.cli`` runs the ``lightspeed`` command."""

from lightspeed.cli.main import main

main()
