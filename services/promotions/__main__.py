import sys

from services.promotions.bootstrap import build
from shared.app import main

sys.exit(main("promotions", build))
