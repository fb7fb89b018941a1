"""The operator command line, `loyalty` (docs/cli.md)."""
