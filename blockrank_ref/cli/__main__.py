"""Allow `python -m blockrank_ref.cli`, the same as the `blockrank` command."""

import sys

from blockrank_ref.cli import main

sys.exit(main())
