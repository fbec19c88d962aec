import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import pytest

from postgres_server import PostgresServer, running_server


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for this test process (see ``postgres_server``)."""
    yield from running_server()
