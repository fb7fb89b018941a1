"""The four bounded contexts, one package each."""
