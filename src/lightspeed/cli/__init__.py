"""The ``lightspeed`` command line."""
