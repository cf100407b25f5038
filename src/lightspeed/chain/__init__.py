"""chain: see DESIGN.md."""
