"""
The ``paychan`` command line.

``main``      argument parsing, error reporting and exit codes
``runner``    runs one command on a fresh reactor of its own
``output``    human-readable or ``--json`` output
``chains``    what ``--chain`` names: the embedded node in-process, or a node over JSON-RPC
``regtest``   ``paychan regtest``: a standalone embedded node serving JSON-RPC
``wallet``    ``paychan wallet``: the SQLite wallet's addresses, balance and coins
``funding``   ``paychan regtest-fund`` and ``paychan regtest-mine``
``pay``       ``paychan pay``; ``pay_checks`` what it checks before it locks money or pays,
              ``stopping`` how SIGINT/SIGTERM end it between two payments
``close``     ``paychan close``: settle a client's channels, never opening one
``errors``    one line for each ordinary mistake; data directories made only with ``--create``

The library never prints; these modules do, and only through ``output``.
"""
