import sys

from services.points.bootstrap import build
from shared.app import main

sys.exit(main("points", build))
