"""`python -m streamproc` runs the command line."""

import sys

from streamproc.cli import main

sys.exit(main())
