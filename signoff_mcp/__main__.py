"""``python -m signoff_mcp``: the same as the ``signoff-mcp`` command."""

import sys

from signoff_mcp.stdio import main

sys.exit(main())
