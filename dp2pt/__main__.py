import sys

from dp2pt.cli import main

sys.exit(main())
