import sys

from services.wallet.bootstrap import build
from shared.app import main

sys.exit(main("wallet", build))
