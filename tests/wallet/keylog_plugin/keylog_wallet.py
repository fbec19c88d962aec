"""
A wallet backend of a third party's, for the tests of ``twistd paychan --wallet``: ``keylog:PATH``
is the in-memory wallet that also appends a line to PATH for each key it makes (its purpose and
public key, synced before the key is used), so a test can see that the server's keys came from
it. Found by Twisted's plugin scan through ``twisted/plugins/keylog_wallet_plugin.py`` beside
this file, once this directory is on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_paychan.bitcoin.addresses import Network
from twisted_paychan.chain.interfaces import IChain
from twisted_paychan.wallet.backends import IServedWallet, IWalletBackendMaker, WalletArgumentError, WalletUnusable
from twisted_paychan.wallet.keys import WalletKey
from twisted_paychan.wallet.memory import MemoryWallet


class KeylogWallet(MemoryWallet):
    def __init__(self, path: str, chain: Any, network: Network) -> None:
        self.keylog = path  # before the base class makes its first key
        super().__init__(chain, network)

    def _persist_key(self, key: WalletKey) -> None:
        with open(self.keylog, "a", encoding="ascii") as f:
            f.write(f"{key.purpose.value} {key.public_key.hex()}\n")
            f.flush()
            os.fsync(f.fileno())


@implementer(IPlugin, IWalletBackendMaker)
class KeylogBackendMaker:
    name = "keylog"
    usage = "keylog:PATH"
    description = "keys in memory, each one's public key appended to PATH (a test backend)"

    def check(self, arg: Optional[str]) -> None:
        if not arg:
            raise WalletArgumentError("the keylog wallet needs a file: --wallet keylog:PATH")
        if not os.path.isdir(os.path.dirname(os.path.abspath(arg))):
            raise WalletArgumentError(f"the keylog wallet's file {arg} is in no directory that exists")

    def open(self, arg: Optional[str], data_dir: str, chain: IChain, network: Network, passphrase_file: Optional[str],
             reactor: Any) -> IServedWallet:
        assert arg is not None  # check() saw it
        if passphrase_file is not None:
            raise WalletUnusable("the keylog wallet encrypts nothing: drop --wallet-passphrase-file")
        return KeylogWallet(arg, chain, network)
