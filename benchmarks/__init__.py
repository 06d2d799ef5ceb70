"""Side-by-side benchmarks against reference implementations (`just bench`)."""
