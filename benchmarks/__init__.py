"""Side-by-side benchmarks: each module compares Lightspeed with a peer or a physical limit in one run."""
