"""Points: the ledger of points lots: credits, pending points, holds, expiry, history."""
