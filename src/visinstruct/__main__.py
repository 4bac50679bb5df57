"""`python -m visinstruct`."""

import sys

from .cli import main

sys.exit(main())
