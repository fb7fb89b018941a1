"""How the outside world reaches the Points service (gRPC)."""
