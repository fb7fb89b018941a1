"""Database tables, repositories and migrations of the Points service."""
