"""onion: see DESIGN.md."""
