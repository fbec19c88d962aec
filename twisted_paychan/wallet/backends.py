"""
Where ``twistd paychan`` keeps its keys: wallet backends, found through Twisted's plugin system
so that a third party can add one by installing a package, without touching this one.

A backend is chosen with ``--wallet NAME[:ARG]`` (default ``sqlite``). ``NAME`` is the ``name``
of an object that provides :class:`IWalletBackendMaker` (and ``twisted.plugin.IPlugin``) in a
module of some ``twisted/plugins/`` directory on ``sys.path`` (ours:
``twisted/plugins/paychan_wallets.py``, with ``sqlite`` and ``memory``); ``ARG`` is everything
after the first colon, handed over as it is. The maker checks ``ARG`` while the options are
parsed (a mistake is one line and exit 2, before anything starts) and, once the chain is open,
opens the wallet: an :class:`IServedWallet`, which the server starts and, when it stops, closes.
``doc/wallet.md`` says how to write one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from twisted.internet.interfaces import IReactorFromThreads
from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import Attribute, Interface, implementer

from twisted_paychan import named_plugins
from twisted_paychan.chain.interfaces import IChain, IWallet

if TYPE_CHECKING:
    from twisted_paychan.bitcoin.addresses import Network

#: The file of the ``sqlite`` backend, in the data directory (the server's permission check and
#: ``paychan backup`` name it too).
SQLITE_FILE = "wallet.sqlite"


class WalletArgumentError(ValueError):
    """The ``ARG`` of ``--wallet NAME:ARG`` is not what the backend needs; the message says why."""


class WalletUnusable(Exception):
    """The backend cannot open the wallet for a reason the operator can fix (a wrong passphrase,
    a file that is not a wallet); the message is the one line the server stops with."""


class IServedWallet(IWallet):
    """A wallet as the server runs it: started once the chain is open, closed when the server
    stops."""

    def start() -> None:
        """Follow the chain (one scan if it never did, then block by block: ``wallet.follow``)
        until :meth:`close`."""

    def close() -> None:
        """Stop following the chain and release whatever the wallet holds open (a file and its
        lock, a connection); it is not used again. Calling it twice is harmless."""


class IWalletBackendMaker(Interface):
    """A wallet backend for ``twistd paychan --wallet NAME[:ARG]``: a Twisted plugin, so the
    object must provide ``twisted.plugin.IPlugin`` too (``@implementer(IPlugin,
    IWalletBackendMaker)``), or the scan passes it over."""

    name = Attribute("The NAME in --wallet NAME[:ARG]: a str.")
    usage = Attribute("How to write the option, e.g. 'sqlite': a str.")
    description = Attribute("One line for --help-wallets: a str.")

    def check(arg: Optional[str]) -> None:
        """Raise :class:`WalletArgumentError` if ``arg`` (None when no colon was given) is not
        usable. Called while the options are parsed, before anything starts."""

    def open(arg: Optional[str], data_dir: str, chain: IChain, network: Network, passphrase_file: Optional[str],
             reactor: Any) -> IServedWallet:
        """The server's wallet, not yet started. ``data_dir`` is the server's data directory (it
        exists, mode 0700); ``chain`` the open IChain; ``network`` the chain's; ``passphrase_file``
        the ``--wallet-passphrase-file`` (None without one; a backend that cannot use one refuses
        it); ``reactor`` does the I/O and timing. Raise :class:`WalletUnusable` for a reason the
        operator can fix."""


def installed_makers() -> dict[str, IWalletBackendMaker]:
    """Every installed wallet backend, by name (Twisted's plugin scan of ``twisted.plugins``)."""
    return named_plugins.installed(IWalletBackendMaker)


def choose(value: str) -> tuple[IWalletBackendMaker, Optional[str]]:
    """The installed maker that ``--wallet value`` names, its ``ARG`` checked; otherwise
    :class:`WalletArgumentError` with one line for the operator."""
    return named_plugins.choose(installed_makers(), value, "wallet backend", "--help-wallets", WalletArgumentError)


def open_wallet(backend: tuple[IWalletBackendMaker, Optional[str]], data_dir: str, chain: IChain, network: Network,
                passphrase_file: Optional[str], reactor: Any) -> IServedWallet:
    """Open the chosen backend's wallet for the server; a third party's object that is no
    :class:`IServedWallet` is refused here, in one line, rather than failing mid-run."""
    maker, arg = backend
    wallet = maker.open(arg, data_dir, chain, network, passphrase_file, reactor)
    if not IServedWallet.providedBy(wallet):
        raise WalletUnusable(f"the wallet backend {maker.name!r} gave {type(wallet).__name__}, which provides no IServedWallet")
    return wallet


def describe_installed() -> str:
    """The text of ``--help-wallets``."""
    return named_plugins.describe(installed_makers(), "Wallet backends (--wallet NAME[:ARG]):")


def _no_argument(name: str, arg: Optional[str]) -> None:
    if arg is not None:
        raise WalletArgumentError(f"the {name} wallet takes no argument (--wallet {name})")


@implementer(IPlugin, IWalletBackendMaker)
class SqliteBackendMaker:
    """``sqlite``: :class:`~twisted_paychan.wallet.sqlite.SqliteWallet` in ``DATA_DIR/wallet.sqlite``,
    created on the first start (encrypted under the passphrase file's when one is given),
    unlocked with it after."""

    name = "sqlite"
    usage = "sqlite"
    description = "the keys in DATA_DIR/wallet.sqlite (the default; encrypted with --wallet-passphrase-file)"
    log = Logger()

    def check(self, arg: Optional[str]) -> None:
        _no_argument(self.name, arg)

    def open(self, arg: Optional[str], data_dir: str, chain: IChain, network: Network, passphrase_file: Optional[str],
             reactor: Any) -> IServedWallet:
        from twisted_paychan.secretfiles import SecretFileError, read_secret_file
        from twisted_paychan.wallet.errors import NotEncrypted, PassphraseRequired, WalletError, WrongPassphrase
        from twisted_paychan.wallet.sqlite import SqliteWallet

        path = os.path.join(data_dir, SQLITE_FILE)
        try:
            passphrase = None if passphrase_file is None else read_secret_file(passphrase_file, "wallet passphrase")
        except SecretFileError as e:
            raise WalletUnusable(str(e)) from None
        try:
            wallet = SqliteWallet.open(path, chain, network, passphrase=passphrase)
        except PassphraseRequired:
            raise WalletUnusable(f"the wallet {path} is encrypted: give its passphrase with --wallet-passphrase-file") from None
        except WrongPassphrase:
            raise WalletUnusable(f"the passphrase in {passphrase_file} does not unlock the wallet {path}") from None
        except NotEncrypted:
            raise WalletUnusable(
                f"the wallet {path} is not encrypted; run `paychan wallet encrypt --data-dir "
                f"{data_dir} --passphrase-file FILE` first"
            ) from None
        except WalletError as e:
            raise WalletUnusable(f"cannot open the wallet {path}: {e}") from None
        if IReactorFromThreads.providedBy(reactor):  # a server's reactor: it does not wait for key commits
            wallet.commit_keys_in_thread(reactor)
        if wallet.created:  # the words are a secret: named here, never logged
            self.log.info("created the wallet {path}; write down its recovery words, which "
                          "`paychan wallet seed --data-dir {data_dir}` shows", path=path, data_dir=data_dir)
        return wallet


@implementer(IPlugin, IWalletBackendMaker)
class MemoryBackendMaker:
    """``memory``: :class:`~twisted_paychan.wallet.memory.MemoryWallet`, a fresh seed at each
    start and nothing on disk. For tests and demos: a restarted server can no longer sign for
    the channels it stored, nor spend what they paid it."""

    name = "memory"
    usage = "memory"
    description = "keys in memory only, for tests and demos: they die with the process"
    log = Logger()

    def check(self, arg: Optional[str]) -> None:
        _no_argument(self.name, arg)

    def open(self, arg: Optional[str], data_dir: str, chain: IChain, network: Network, passphrase_file: Optional[str],
             reactor: Any) -> IServedWallet:
        from twisted_paychan.wallet.memory import MemoryWallet

        if passphrase_file is not None:
            raise WalletUnusable("the memory wallet has no file to encrypt: drop --wallet-passphrase-file")
        self.log.warn("the wallet is in memory (--wallet memory): its keys die with this process, and with "
                      "them the income and the settlements of the channels stored in {data_dir}; use it "
                      "for tests and demos only", data_dir=data_dir)
        return MemoryWallet(chain, network)
