"""node: see DESIGN.md."""
