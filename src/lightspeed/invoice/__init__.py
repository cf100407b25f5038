"""invoice: see DESIGN.md."""
