"""``python -m hashkern``: the ``hashkern`` command line (e.g. ``python -m hashkern info``)."""
import sys

from hashkern.cli import main

sys.exit(main())
