"""Business rules of promotions: pure functions and small values, no I/O."""
