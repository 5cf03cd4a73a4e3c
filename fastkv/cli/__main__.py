"""``python -m fastkv.cli``: the same as the ``fastkvctl`` entry point."""
import sys

from fastkv.cli.main import main

sys.exit(main())
