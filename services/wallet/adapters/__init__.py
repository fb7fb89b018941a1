"""Database tables, repositories and migrations of the Wallet service."""
