"""Use cases of the Wallet service, each one transaction."""
