"""Database tables, repositories, peers and migrations of the Promotions service."""
