"""
The wallet's keys and what they are for.

A private key never leaves the wallet: callers get an :class:`ISigner` (a
:class:`~twisted_paychan.bitcoin.keys.Signer`) that signs a digest and shows its public key,
nothing more. Keys are random (not HD-derived), so a backup of the wallet file is only complete
up to the last key it created; ``doc/wallet.md`` says what that means.

Every key has a *purpose*: ``channel`` keys go into a channel's 2-of-2 contract and are never
scanned for coins; ``receive`` keys back the addresses handed out for funding the wallet;
``payout`` is the single key whose script receives change and settlement payouts. Receive and
payout keys have a *script type*, P2WPKH (the default) or P2PKH, which fixes their output script.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Optional

import coincurve

from twisted_paychan.bitcoin.addresses import hash160, p2pkh_script, p2wpkh_script
from twisted_paychan.bitcoin.keys import Signer

__all__ = ["KeyPurpose", "ScriptType", "Signer", "KeySigner", "WalletKey", "generate_key"]


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
    #: None for channel keys: their scripts are the channel's business.
    script_type: Optional[ScriptType]

    @property
    def script_pubkey(self) -> Optional[bytes]:
        return None if self.script_type is None else self.script_type.script_for(self.public_key)

    def signer(self) -> Signer:
        return Signer(self.secret)

    def __repr__(self) -> str:  # never print the secret
        return f"<WalletKey {self.purpose.value} {self.public_key.hex()}>"

    @classmethod
    def from_secret(
        cls, secret: bytes, purpose: KeyPurpose, script_type: Optional[ScriptType]
    ) -> "WalletKey":
        public_key = coincurve.PrivateKey(secret).public_key.format(compressed=True)
        return cls(secret, public_key, purpose, script_type)


def generate_key(purpose: KeyPurpose, script_type: Optional[ScriptType]) -> WalletKey:
    """A fresh random key (the operating system's CSPRNG, through coincurve)."""
    if (purpose is KeyPurpose.CHANNEL) != (script_type is None):
        raise ValueError("channel keys have no script type; receive and payout keys need one")
    return WalletKey.from_secret(coincurve.PrivateKey().secret, purpose, script_type)
