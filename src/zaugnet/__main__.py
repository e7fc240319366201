"""``python -m zaugnet`` (and ``torchrun -m zaugnet``) runs the command line."""

import sys

from zaugnet.cli import main

sys.exit(main())
