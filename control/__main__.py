"""`python -m control` is `fngate`."""

import sys

from .cli import main

sys.exit(main())
