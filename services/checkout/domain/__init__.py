"""Business rules of checkout: pure functions and small values, no I/O."""
