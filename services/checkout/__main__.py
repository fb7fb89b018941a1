import sys

from services.checkout.bootstrap import build
from shared.app import main

sys.exit(main("checkout", build))
