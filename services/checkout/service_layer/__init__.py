"""Use cases of the Checkout service, each one transaction."""
