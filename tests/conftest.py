"""Shared test set-up: tests import their naive twins as `naive`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
