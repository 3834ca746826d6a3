"""`python -m fngate.control` is `fngate` too."""

import sys

from .cli import main

sys.exit(main())
