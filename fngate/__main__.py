"""`python -m fngate ...` is the `fngate` command."""

import sys

from fngate.control.cli import main

sys.exit(main())
