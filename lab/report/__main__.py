"""``python3 -m lab.report``."""

import sys

from lab.report.cli import main

sys.exit(main())
