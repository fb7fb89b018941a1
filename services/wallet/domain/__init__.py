"""Business rules of the wallet: pure functions and small values, no I/O."""
