"""`python -m recipes.cli`: the same as `aezoo`."""

import sys

from recipes.cli.main import main

sys.exit(main())
