"""Database tables, repositories, peers and migrations of the Checkout service."""
