"""micro: see DESIGN.md."""
