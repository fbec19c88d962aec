"""``python -m twisted_paychan.cli``: the same as the ``paychan`` command."""

import sys

from twisted_paychan.cli.main import main

sys.exit(main())
