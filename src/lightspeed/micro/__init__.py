"""Lightspeed pay-per-call: allowances paid once, each API call carrying its own hash-chain token."""
