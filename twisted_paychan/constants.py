"""
Every protocol number in one place, named as the specification (PROTOCOL.md §0.2) names it.

Each value carries the reason it has that value, so nobody has to guess whether it may change:
most of them are fixed by what stock bitcoinj does on the wire or in its checks.
"""

from typing import Final

# -- Framing (§1) -----------------------------------------------------------------------------

#: Largest frame payload, not counting the 4-byte length prefix: Java's Short.MAX_VALUE, which
#: both bitcoinj endpoints use as their limit.
MAX_MESSAGE_SIZE: Final = 32767

# -- Payments (§7) ----------------------------------------------------------------------------

#: UPDATE_PAYMENTs one connection may have sent without their PAYMENT_ACK (pipelining, our
#: extension; bitcoinj's client sends one at a time). Our server checks and stores up to this
#: many ahead of the one being acknowledged; beyond it a client is abusing the connection.
MAX_PAYMENTS_IN_FLIGHT: Final = 256

# -- Versions (§3) ----------------------------------------------------------------------------

#: Protocol majors a bitcoinj server speaks; the minor is always 0 and never checked.
SERVER_MAJOR_VERSIONS: Final = frozenset({1, 2})

# -- Time (§10) -------------------------------------------------------------------------------

#: Default ClientVersion.time_window_secs: 24 hours minus the 60 s expiry slack.
DEFAULT_CLIENT_TIME_WINDOW: Final = 86340
#: The client accepts E when E <= now + time_window + CLIENT_EXPIRY_SLACK.
CLIENT_EXPIRY_SLACK: Final = 60
#: Server default bounds for the time window it grants.
DEFAULT_MIN_TIME_WINDOW: Final = 14400
DEFAULT_MAX_TIME_WINDOW: Final = 604800
#: A server may not configure a minimum window below this (bitcoinj IllegalArgumentException).
HARD_MIN_TIME_WINDOW: Final = 7200
#: The server settles this many seconds before E: nodes accept block times up to 2 h ahead,
#: so a refund can become valid before wall-clock E.
SERVER_SETTLE_OFFSET: Final = 7200
#: The client broadcasts its refund this long after the lock time (v1) or E (v2).
CLIENT_REFUND_DELAY: Final = 300

# -- Transactions (§4) ------------------------------------------------------------------------

#: nLockTime values at or above this are UNIX timestamps, below it block heights.
LOCKTIME_THRESHOLD: Final = 500_000_000
#: Dust limit of a P2PKH output (bitcoinj Transaction.MIN_NONDUST_OUTPUT).
P2PKH_DUST_LIMIT: Final = 546
#: Dust limit of a P2SH output, from a 3000 sat/kB dust relay fee.
P2SH_DUST_LIMIT: Final = 540
#: Dust limit of a P2WPKH output (the wallet's change and receive form), from the same fee:
#: (31-byte output + 67-byte input, the witness counted at a quarter) * 3 sat per byte.
P2WPKH_DUST_LIMIT: Final = 294
#: bitcoinj REFERENCE_DEFAULT_MIN_TX_FEE: default min_payment, client's default acceptable
#: min_payment, the fixed refund fee, and the fee-rate floor in sat/kB.
REFERENCE_MIN_TX_FEE: Final = 1000
DEFAULT_MIN_PAYMENT: Final = REFERENCE_MIN_TX_FEE
REFUND_FEE: Final = REFERENCE_MIN_TX_FEE
FEE_RATE_FLOOR: Final = REFERENCE_MIN_TX_FEE
#: bitcoinj DEFAULT_TX_FEE in sat/kB, used for contracts and settlements unless configured.
BITCOINJ_DEFAULT_FEE_RATE: Final = 100_000
#: Refund input sequence: non-final so the lock time counts, not an RBF signal.
REFUND_SEQUENCE: Final = 0xFFFFFFFE
#: Payment and settlement input sequence: final.
FINAL_SEQUENCE: Final = 0xFFFFFFFF
#: Version of every transaction bitcoinj builds.
TX_VERSION: Final = 1
#: The longest script number bitcoinj accepts for E in the v2 redeem script.
MAX_SCRIPT_TIME_BYTES: Final = 5
#: The total supply in satoshis; any amount above it is invalid (§2.6).
MAX_MONEY: Final = 21_000_000 * 100_000_000
#: Times at or above 2^32 cannot be an nLockTime (§2.6).
MAX_TIME: Final = 2**32 - 1

# -- Bitcoin Core's consensus and relay rules --------------------------------------------------
# Not channel protocol numbers, but every chain judges our transactions by them; named as Core
# names them (consensus/consensus.h, policy/policy.h, script/script.h).

#: A coinbase output may be spent only in a block at least this many blocks after its own.
COINBASE_MATURITY: Final = 100
#: Core's default -dustrelayfee in sat/kB: an output is dust when spending it would cost more
#: than its value at this rate; the 546/540/294 limits above derive from it.
DUST_RELAY_TX_FEE: Final = 3000
#: Core's default -minrelaytxfee in sat/kB: a mempool refuses a transaction paying less. (The
#: same 1000 as bitcoinj's REFERENCE_MIN_TX_FEE, but set by Core, not by bitcoinj.)
DEFAULT_MIN_RELAY_TX_FEE: Final = 1000
#: Scripts longer than this can never be spent, so their outputs are never dust.
MAX_SCRIPT_SIZE: Final = 10_000

# -- Sighash (§4.2) ---------------------------------------------------------------------------

SIGHASH_ALL: Final = 0x01
SIGHASH_NONE: Final = 0x02
SIGHASH_SINGLE: Final = 0x03
SIGHASH_ANYONECANPAY: Final = 0x80
#: v1 refund, server part; payment with c = 0.
SIGHASH_NONE_ANYONECANPAY: Final = SIGHASH_NONE | SIGHASH_ANYONECANPAY
#: payment with c > 0.
SIGHASH_SINGLE_ANYONECANPAY: Final = SIGHASH_SINGLE | SIGHASH_ANYONECANPAY
