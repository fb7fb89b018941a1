"""Use cases of the Promotions service, each one transaction."""
