"""
Where ``twistd paychan --store`` keeps the server's channels: ``sqlite`` (``DATA_DIR/channels.sqlite``,
the default) or a PostgreSQL URL (``postgresql://user@host:port/db``; see ``doc/cluster.md``).

The URL may hold a password, and a password on the command line shows in ``ps``: so
``--store-password-file`` is the way to give one, and whatever is logged or said about the
store is :func:`masked`. :func:`probe_postgres` connects and brings the schema up to date
before anything listens, as ``startup.probe_chain`` does for the chain: an unreachable database
or refused credentials then stop the start with one line, not a server that runs without its
store. It blocks (twistd starts services before the reactor runs), for at most ``timeout``
seconds per connection attempt.
"""

from __future__ import annotations

from typing import Optional, Union
from urllib.parse import urlsplit, urlunsplit

SQLITE = "sqlite"
_SCHEMES = ("postgresql://", "postgres://")


class StoreUnusable(Exception):
    """The store named by ``--store`` cannot be used; the message says why, in one line."""


def is_postgres(store: str) -> bool:
    return store.startswith(_SCHEMES)


def check_store_option(store: str) -> Optional[str]:
    """None when ``--store`` is valid; else the reason it is not (one line)."""
    if store == SQLITE or is_postgres(store):
        return None
    return f"--store is 'sqlite' or a postgresql:// URL, not {masked(store)!r}"


def masked(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``: safe to log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user, _, _ = parts.netloc.rpartition("@")[0].partition(":")
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def conninfo(url: str, password: Optional[str], timeout: int = 10) -> str:
    """The libpq connection string for ``url``, with ``password`` (from the password file) over
    the URL's, and a connect timeout so that a silent host does not hang the start."""
    from psycopg.conninfo import make_conninfo

    extra: dict[str, Union[str, int, None]] = {"connect_timeout": timeout}
    if password is not None:
        extra["password"] = password
    try:
        return make_conninfo(url, **extra)
    except Exception as e:  # psycopg.ProgrammingError: libpq could not parse it
        raise StoreUnusable(f"--store {masked(url)} is not a valid PostgreSQL URL: {_first_line(e)}") from None


def probe_postgres(url: str, info: str) -> None:
    """Connect to the database of ``info`` and migrate its schema, now; :class:`StoreUnusable`
    naming the problem (``url`` masked) if it cannot be reached, refuses the credentials or
    holds a schema newer than this program."""
    import psycopg

    from twisted_paychan.store.interfaces import StoreError
    from twisted_paychan.store.postgres import migrate

    where = f"the PostgreSQL store at {masked(url)}"
    try:
        with psycopg.connect(info, autocommit=True) as conn:
            migrate(conn)
    except psycopg.Error as e:
        raise StoreUnusable(f"cannot use {where}: {_first_line(e)}") from None
    except StoreError as e:
        raise StoreUnusable(f"cannot use {where}: {e}") from None


def _first_line(e: BaseException) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(e).__name__
