"""
The ``signer:ENDPOINT`` wallet backend's maker (a Twisted plugin in
``twisted/plugins/paychan_wallets.py``): the server's keys in ``paychan signer``, reached at
ENDPOINT (``unix:PATH``, or ``tls:HOST:PORT:certificate=PEM:trustRoots=PEM``). The wallet itself
is ``wallet.remote``, imported only when the backend is chosen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from twisted.logger import Logger
from twisted.plugin import IPlugin
from zope.interface import implementer

from twisted_paychan.chain.interfaces import IChain
from twisted_paychan.wallet.backends import IServedWallet, IWalletBackendMaker, WalletArgumentError, WalletUnusable

if TYPE_CHECKING:
    from twisted_paychan.bitcoin.addresses import Network


@implementer(IPlugin, IWalletBackendMaker)
class SignerBackendMaker:
    """``signer:ENDPOINT``: no key in the server; ``paychan signer`` signs (doc/wallet.md)."""

    name = "signer"
    usage = "signer:ENDPOINT"
    description = ("the keys in a `paychan signer` process at unix:PATH or "
                   "tls:HOST:PORT:certificate=PEM:trustRoots=PEM; none in the server")
    log = Logger()

    def check(self, arg: Optional[str]) -> None:
        if not arg or not (arg.startswith("unix:") or arg.startswith("tls:")):
            raise WalletArgumentError("the signer wallet needs its endpoint: --wallet signer:unix:PATH or "
                                      "--wallet signer:tls:HOST:PORT:certificate=PEM:trustRoots=PEM")

    def open(self, arg: Optional[str], data_dir: str, chain: IChain, network: Network, passphrase_file: Optional[str],
             reactor: Any) -> IServedWallet:
        from twisted_paychan.signer.endpoints import EndpointError
        from twisted_paychan.wallet.remote import open_signer_wallet

        assert arg is not None
        if passphrase_file is not None:
            raise WalletUnusable("the signer wallet keeps no key to encrypt: the passphrase goes to `paychan signer`; "
                                 "drop --wallet-passphrase-file")
        try:
            wallet = open_signer_wallet(arg, chain, network, reactor)
        except EndpointError as e:
            raise WalletUnusable(str(e)) from None
        self.log.info("the keys are in the signer at {where}: this server holds none", where=arg)
        return wallet
