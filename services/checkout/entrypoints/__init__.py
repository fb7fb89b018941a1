"""How the outside world reaches the Checkout service (gRPC)."""
