"""Business rules of points: pure functions and small values, no I/O."""
