"""payments: see DESIGN.md."""
