"""Use cases of the Points service, each one transaction."""
