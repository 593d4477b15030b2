"""``python -m torchmd_core`` is the ``tmd`` command."""

import sys

from torchmd_core.cli import main

sys.exit(main())
