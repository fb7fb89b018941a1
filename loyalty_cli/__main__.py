"""`python -m loyalty_cli` is `loyalty`."""

from loyalty_cli.main import main

main()
