"""
The wallet's keys and what they are for.

A private key never leaves the wallet: callers get an :class:`ISigner` (a
:class:`~twisted_paychan.bitcoin.keys.Signer`) that signs a digest and shows its public key,
nothing more. A wallet made with a seed derives every key from it (``hd``; ``path`` says where);
a wallet from before seeds has random keys (no ``path``), so a backup of its file is only
complete up to the last key it created; ``doc/wallet.md`` says what that means.

Every key has a *purpose*: ``channel`` keys go into a channel's 2-of-2 contract; ``receive`` keys
back the addresses handed out for funding the wallet; ``payout`` keys receive change and
settlement payouts. Receive and payout keys have a *script type*, P2WPKH (the default) or P2PKH,
which fixes their output script. A channel key has one only when its channel pays it back: a
client's change and refund pay P2PKH of its channel key, so a client's channel keys are
*tracked* as P2PKH and their payouts are the wallet's coins; a server's channel keys never
receive an output and have none.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

import coincurve

from twisted_paychan.bitcoin.addresses import hash160, p2pkh_script, p2wpkh_script
from twisted_paychan.bitcoin.keys import Signer

__all__ = ["KeyPurpose", "ScriptType", "Signer", "KeySigner", "WalletKey", "generate_key", "derive_key"]


class KeyPurpose(enum.Enum):
    CHANNEL = "channel"
    RECEIVE = "receive"
    PAYOUT = "payout"


class ScriptType(enum.Enum):
    P2WPKH = "p2wpkh"
    P2PKH = "p2pkh"

    def script_for(self, public_key: bytes) -> bytes:
        """The output script paying to ``public_key`` (compressed SEC) in this form."""
        h = hash160(public_key)
        return p2wpkh_script(h) if self is ScriptType.P2WPKH else p2pkh_script(h)


#: The wallet's signer under the name this module has always exported. It is
#: :class:`bitcoin.keys.Signer`, which has no ``secret``, not :class:`bitcoin.keys.KeySigner`.
KeySigner = Signer


@dataclass(frozen=True, repr=False)
class WalletKey:
    """One key the wallet holds, with what it is for. ``secret`` is the raw 32-byte key."""

    secret: bytes
    public_key: bytes
    purpose: KeyPurpose
    #: None for a channel key whose channel never pays it (a server's); see the docstring.
    script_type: Optional[ScriptType]
    #: Where the seed derives it (``hd.Branch.path``); None for a random key.
    path: Optional[str] = None
    #: The channel (contract txid) a settlement payout key was handed out for.
    label: Optional[bytes] = None

    @property
    def script_pubkey(self) -> Optional[bytes]:
        return None if self.script_type is None else self.script_type.script_for(self.public_key)

    def signer(self) -> Signer:
        return Signer(self.secret)

    def __repr__(self) -> str:  # never print the secret
        return f"<WalletKey {self.purpose.value} {self.public_key.hex()}>"

    @classmethod
    def from_secret(
        cls, secret: bytes, purpose: KeyPurpose, script_type: Optional[ScriptType],
        path: Optional[str] = None, label: Optional[bytes] = None,
    ) -> "WalletKey":
        public_key = coincurve.PrivateKey(secret).public_key.format(compressed=True)
        return cls(secret, public_key, purpose, script_type, path, label)


def _check(purpose: KeyPurpose, script_type: Optional[ScriptType]) -> None:
    if purpose is not KeyPurpose.CHANNEL and script_type is None:
        raise ValueError("receive and payout keys need a script type")
    if purpose is KeyPurpose.CHANNEL and script_type not in (None, ScriptType.P2PKH):
        raise ValueError("a channel pays its key back as P2PKH only")


def generate_key(purpose: KeyPurpose, script_type: Optional[ScriptType]) -> WalletKey:
    """A fresh random key (the operating system's CSPRNG, through coincurve)."""
    _check(purpose, script_type)
    return WalletKey.from_secret(coincurve.PrivateKey().secret, purpose, script_type)


def derive_key(
    secret: bytes, path: str, purpose: KeyPurpose, script_type: Optional[ScriptType],
    label: Optional[bytes] = None,
) -> WalletKey:
    """The key a seed derived at ``path`` (its ``secret``, from ``hd.Seed.secret``)."""
    _check(purpose, script_type)
    return WalletKey.from_secret(secret, purpose, script_type, path, label)
