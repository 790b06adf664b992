"""``python3 -m lab.bench``."""

import sys

from lab.bench.cli import main

sys.exit(main())
