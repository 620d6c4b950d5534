"""``python -m clpft.cli``: the ``clpft`` command."""

import sys

from clpft.cli.commands import main

sys.exit(main())
