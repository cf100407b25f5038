"""channel: see DESIGN.md."""
