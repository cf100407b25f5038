"""routing: see DESIGN.md."""
