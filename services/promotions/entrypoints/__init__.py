"""How the outside world reaches the Promotions service (gRPC)."""
