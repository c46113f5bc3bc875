"""``python -m hashkern``: the ``hashkern`` command (:mod:`hashkern.training.cli`)."""
import sys

from hashkern.training.cli import main

sys.exit(main())
