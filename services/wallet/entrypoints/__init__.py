"""How the outside world reaches the Wallet service (gRPC)."""
