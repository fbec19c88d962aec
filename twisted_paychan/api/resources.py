"""
The API's routes on ``twisted.web``: one resource that checks the token, finds the route by
method and path, runs its handler (a coroutine, on the reactor thread) and writes its JSON.

Every answer is JSON; an error is ``{"error": message}`` with its status: 400 for a bad request
(a txid that is not 64 hex digits, an unknown state), 401 without the right token, 404 for an
unknown path or channel, 405 for a known path with the wrong method, 409 for a settle that cannot
happen now. A handler that raises anything else is logged with its traceback and answered 500:
nothing a request does can reach the reactor as an unhandled error.

Routes are a table (:data:`ROUTES`), so one more is one line. ``extra`` holds resources served
without the token under other top-level names (the dashboard's static files).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Coroutine, Optional, Union

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

import twisted_paychan
from twisted_paychan.api.auth import Token
from twisted_paychan.api.events import EventLog, EventStream
from twisted_paychan.api.health import HealthCheck
from twisted_paychan.api.metrics import CONTENT_TYPE, ServerMetrics, Snapshot
from twisted_paychan.api import views
from twisted_paychan.bitcoin.settlement import SettlementRejected, SettlementUnaffordable
from twisted_paychan.bitcoin.txid import txid as txid_of
from twisted_paychan.chain.interfaces import InsufficientFunds, IWallet
from twisted_paychan.chain.types import BroadcastRejected, ChainTip, display_hex, from_display_hex
from twisted_paychan.channel.records import ServerChannelState
from twisted_paychan.constants import FEE_RATE_FLOOR
from twisted_paychan.net.server_manager import SETTLEABLE, ServerChannelManager
from twisted_paychan.rpc import jsonenc
from twisted_paychan.wallet.remote import Refused, SignerUnavailable
from twisted_paychan.wallet.send import SendError, send_coins

JSON = dict[str, Any]


class ApiError(Exception):
    """An answer other than 200, with the message the caller reads."""

    def __init__(self, status: int, message: str, /, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class ApiContext:
    """What the handlers read: the running server's parts."""

    manager: ServerChannelManager
    wallet: IWallet
    clock: IReactorTime
    events: EventLog
    metrics: ServerMetrics
    health: HealthCheck
    token: Token
    network: str = "regtest"
    #: Where channel clients connect, and the API's own URL once it listens.
    listen: list[str] = field(default_factory=list)
    api_url: Optional[str] = None
    started_at: float = 0.0
    keepalive: float = 15.0
    streams: list[EventStream] = field(default_factory=list)
    #: The server's data directory, which ``POST /v1/backup`` copies (None: no backups here).
    data_dir: Optional[str] = None


Result = Union[JSON, bytes, None]
Handler = Callable[[ApiContext, Request, "re.Match[str]"], Coroutine[Any, Any, Result]]


def _txid(text: str) -> bytes:
    try:
        return from_display_hex(text)
    except ValueError:
        raise ApiError(400, f"not a contract txid (64 hex digits): {text[:80]!r}") from None


#: The largest JSON body a POST may carry (``POST /v1/wallet/send`` needs a few hundred bytes).
MAX_BODY = 64 * 1024


def json_body(request: Request) -> JSON:
    """The request's body as a JSON object; 400 if it is not one (or is larger than MAX_BODY)."""
    content = request.content
    raw = content.read(MAX_BODY + 1) if content is not None else b""
    if len(raw) > MAX_BODY:
        raise ApiError(400, f"the body is larger than {MAX_BODY} bytes")
    try:
        body = jsonenc.loads(raw) if raw.strip() else None
    except ValueError as e:
        raise ApiError(400, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _query(request: Request, name: str) -> list[str]:
    args: dict[bytes, list[bytes]] = request.args or {}
    return [v.decode("utf-8", "replace") for v in args.get(name.encode(), [])]


async def _tip(ctx: ApiContext) -> Optional[ChainTip]:
    try:
        d: defer.Deferred[ChainTip] = defer.maybeDeferred(ctx.manager.chain.tip)
        d.addTimeout(5.0, ctx.clock)
        return await d
    except Exception:
        return None


async def info(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    totals = await ctx.manager.totals()
    tip = await _tip(ctx)
    now = ctx.clock.seconds()
    return {
        "version": twisted_paychan.__version__,
        "network": ctx.network,
        "chain_tip": None if tip is None else {"height": tip.height, "hash": display_hex(tip.block_hash),
                                               "time": tip.time, "time_iso": views.iso(tip.time)},
        "listen": ctx.listen,
        "api": ctx.api_url,
        "started_at": views.iso(ctx.started_at),
        "uptime": int(now - ctx.started_at),
        "connected_clients": ctx.metrics.connected_clients,
        **views.totals(totals),
    }


async def channels(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    wanted = _query(request, "state")
    for state in wanted:
        if state not in views.STATES:
            raise ApiError(400, f"unknown state {state!r}; one of {', '.join(views.STATES)}")
    limit = _count(request, "limit")
    offset = _count(request, "offset") or 0
    states = [ServerChannelState(s) for s in wanted] or None
    shown = await ctx.manager.list_channels(states, limit, offset)
    return {"channels": await views.channel_rows(shown, ctx.manager, ctx.clock.seconds()),
            "counts": views.totals(await ctx.manager.totals())["channels_by_state"]}


def _count(request: Request, name: str) -> Optional[int]:
    """A non-negative integer query argument, or None when absent."""
    given = _query(request, name)
    if not given:
        return None
    try:
        value = int(given[-1])
    except ValueError:
        value = -1
    if value < 0:
        raise ApiError(400, f"{name} must be a non-negative integer, not {given[-1]!r}")
    return value


async def one_channel(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    txid = _txid(match["txid"])
    record = await ctx.manager.channel(txid)
    if record is None:
        raise ApiError(404, f"no channel {match['txid']}")
    return views.channel_row(record, ctx.manager, ctx.clock.seconds(), await views.confirmations_of(ctx.manager.chain, record))


def _settle_row(txid: bytes, raw: Optional[bytes], error: Optional[str]) -> JSON:
    return {"contract_txid": display_hex(txid),
            "settlement_txid": display_hex(txid_of(raw)) if raw is not None else None, "error": error}


async def settle(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    txid = _txid(match["txid"])
    record = await ctx.manager.channel(txid)
    if record is None:
        raise ApiError(404, f"no channel {match['txid']}")
    if record.state not in SETTLEABLE:
        raise ApiError(409, f"the channel is {record.state.value}: nothing to settle", state=record.state.value)
    ApiResource.log.info("api: settle {txid}", txid=match["txid"])
    try:
        raw = await ctx.manager.settle(txid)
    except KeyError:
        raise ApiError(404, f"no channel {match['txid']}") from None
    except (SettlementUnaffordable, SettlementRejected) as e:
        row = _settle_row(txid, None, f"{type(e).__name__}: {e}")
        raise ApiError(409, f"not settled: {e}", results=[row]) from None
    return {"results": [_settle_row(txid, raw, None)]}


async def settle_all(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    ApiResource.log.info("api: settle all")
    results = await ctx.manager.settle_all()
    return {"results": [_settle_row(r.contract_txid, r.settlement_tx, r.error) for r in results]}


async def wallet_balance(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    balance = await ctx.wallet.balance()
    return {
        "confirmed": balance.confirmed,
        "unconfirmed": balance.unconfirmed,
        "total": balance.total,
        "confirmed_btc": jsonenc.btc(balance.confirmed),
        "unconfirmed_btc": jsonenc.btc(balance.unconfirmed),
        "total_btc": jsonenc.btc(balance.total),
    }


async def wallet_send(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    """Withdraw: ``{"address": ..., "amount": SAT | "all", "fee_rate": SAT_PER_KB}`` (the fee rate
    defaults to the server's own); the same checks and coin selection as ``paychan wallet send``."""
    body = json_body(request)
    address, amount, fee_rate = body.get("address"), body.get("amount"), body.get("fee_rate", ctx.manager.policy.fee_rate)
    if not isinstance(address, str) or not address:
        raise ApiError(400, "address: an address of this server's network is needed")
    if amount != "all" and (not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0):
        raise ApiError(400, 'amount: a positive number of sat, or "all"')
    if not isinstance(fee_rate, int) or isinstance(fee_rate, bool) or fee_rate < FEE_RATE_FLOOR:
        raise ApiError(400, f"fee_rate: a whole number of sat/kB, at least {FEE_RATE_FLOOR}")
    ApiResource.log.info("api: send {amount} to {address}", amount=amount, address=address)
    try:
        sent = await send_coins(ctx.wallet, ctx.manager.chain, address, None if amount == "all" else amount, fee_rate)
    except SendError as e:
        raise ApiError(400, str(e)) from None
    except InsufficientFunds as e:
        raise ApiError(409, str(e), needed=e.needed, available=e.available) from None
    except BroadcastRejected as e:
        raise ApiError(409, f"the node refused the transaction: {e}") from None
    except Refused as e:  # a remote signer's rules (its daily limit, ...): doc/wallet.md
        raise ApiError(409, f"the signer refused: {e}") from None
    except SignerUnavailable as e:
        raise ApiError(503, f"the signer is unavailable: {e}") from None
    return {"txid": sent.txid_hex, "address": sent.address, "amount": sent.amount,
            "amount_btc": jsonenc.btc(sent.amount), "fee": sent.fee}


async def backup(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    """``{"out_dir": ABSOLUTE_PATH}``: ``paychan backup`` made by the server itself (the copies
    are then owned by the server's user), in a thread: SQLite's online backup of the channel
    store (with its payment log) and the wallet, as ``twisted_paychan.backup`` does it beside
    a running server. 409 when it cannot be made (the directory holds a backup, ...)."""
    from twisted.internet.threads import deferToThreadPool

    from twisted_paychan.backup import BackupError, backup as copy

    if ctx.data_dir is None:
        raise ApiError(404, "this server makes no backups")
    out_dir = json_body(request).get("out_dir")
    if not isinstance(out_dir, str) or not os.path.isabs(out_dir):
        raise ApiError(400, "out_dir: an absolute path on the server's machine is needed")
    ApiResource.log.info("api: backup to {out_dir}", out_dir=out_dir)
    reactor: Any = ctx.clock
    try:
        result = await deferToThreadPool(reactor, reactor.getThreadPool(), copy, ctx.data_dir, out_dir)
    except BackupError as e:
        raise ApiError(409, str(e)) from None
    return {"out_dir": result.out_dir, "files": list(result.files), "server_channels": result.server_channels,
            "client_channels": result.client_channels, "wallet_keys": result.wallet_keys, "online": result.online,
            "logged_payments": result.logged_payments, "created": result.created}


async def health(ctx: ApiContext, request: Request, match: "re.Match[str]") -> JSON:
    report = await ctx.health.check()
    if not report.ok:
        raise ApiError(503, "; ".join(report.reasons), **report.to_json())
    return report.to_json()


async def snapshot(ctx: ApiContext) -> Snapshot:
    stored = await ctx.manager.totals()
    totals = views.totals(stored)
    tip = await _tip(ctx)
    now = ctx.clock.seconds()
    return Snapshot(channels_by_state=totals["channels_by_state"], value_locked=totals["value_locked"],
                    paid_to_us=totals["paid_to_us"], tip_height=tip.height if tip is not None else None,
                    next_expiry_in=None if stored.next_open_expiry is None else stored.next_open_expiry - now)


async def metrics(ctx: ApiContext, request: Request, match: "re.Match[str]") -> bytes:
    text = ctx.metrics.render(await snapshot(ctx))
    request.setHeader(b"content-type", CONTENT_TYPE.encode())
    return text


async def events(ctx: ApiContext, request: Request, match: "re.Match[str]") -> None:
    header = request.getHeader(b"last-event-id")
    last = header.decode("utf-8", "replace") if header is not None else None
    if last is None:
        given = _query(request, "last_event_id")
        last = given[0] if given else None
    stream = EventStream(request, ctx.events, last, ctx.keepalive)
    ctx.streams.append(stream)
    request.notifyFinish().addBoth(lambda _: ctx.streams.remove(stream) if stream in ctx.streams else None)
    return None


#: Anything that could be a txid gets a 400 that says what a txid is; "settle-all" is not one.
_TXID = r"(?P<txid>[0-9A-Za-z]+)"

#: (method, path pattern, handler). Paths are part of the API's contract (doc/api.md).
ROUTES: list[tuple[bytes, "re.Pattern[str]", Handler]] = [
    (b"GET", re.compile(r"/v1/info"), info),
    (b"GET", re.compile(r"/v1/channels"), channels),
    (b"POST", re.compile(r"/v1/channels/settle-all"), settle_all),
    (b"GET", re.compile(rf"/v1/channels/{_TXID}"), one_channel),
    (b"POST", re.compile(rf"/v1/channels/{_TXID}/settle"), settle),
    (b"GET", re.compile(r"/v1/wallet/balance"), wallet_balance),
    (b"POST", re.compile(r"/v1/wallet/send"), wallet_send),
    (b"GET", re.compile(r"/v1/events"), events),
    (b"POST", re.compile(r"/v1/backup"), backup),
    (b"GET", re.compile(r"/v1/health"), health),
    (b"GET", re.compile(r"/metrics"), metrics),
]

#: Where the token may also come as ``?access_token=`` (RFC 6750 §2.3): a browser's
#: ``EventSource`` cannot set a header.
_QUERY_TOKEN_PATHS = frozenset({"/v1/events"})


def _route(method: bytes, path: str) -> tuple[Handler, "re.Match[str]"]:
    allowed = False
    for route_method, pattern, handler in ROUTES:
        match = pattern.fullmatch(path)
        if match is None:
            continue
        if route_method == method or (method == b"HEAD" and route_method == b"GET"):
            return handler, match
        allowed = True
    if allowed:
        raise ApiError(405, f"{method.decode(errors='replace')} is not allowed on {path}")
    raise ApiError(404, f"no such endpoint: {path}")


class ApiRoot(Resource):
    """The site's root: the ``extra`` resources by their first path segment (``b""`` is ``/``),
    everything else to the API, which answers unknown paths with a JSON 404."""

    def __init__(self, api: "ApiResource", extra: Optional[dict[bytes, Resource]] = None) -> None:
        Resource.__init__(self)
        self.api = api
        self.extra = extra or {}

    def getChild(self, path: bytes, request: Request) -> Resource:
        child = self.extra.get(path)
        return child if child is not None else self.api

    def render(self, request: Request) -> Union[bytes, int]:
        return self.api.render(request)


class ApiResource(Resource):
    """The whole API: token, route, handler, JSON answer."""

    isLeaf = True
    log = Logger()

    def __init__(self, context: ApiContext) -> None:
        Resource.__init__(self)
        self.context = context

    def _authorized(self, request: Request, path: str) -> bool:
        token = self.context.token
        if token.check_header(request.getHeader(b"authorization")):
            return True
        if path in _QUERY_TOKEN_PATHS:
            given = (request.args or {}).get(b"access_token", [])
            return bool(given) and token.check(given[0])
        return False

    def render(self, request: Request) -> Union[bytes, int]:
        path = (request.path or b"/").decode("utf-8", "replace").rstrip("/") or "/"
        method = request.method or b"GET"
        if not self._authorized(request, path):
            peer = request.getClientAddress()
            self.log.warn("api: 401 for {method} {path} from {peer} ({why})", method=method.decode(errors="replace"),
                          path=path, peer=getattr(peer, "host", str(peer)),
                          why="wrong token" if request.getHeader(b"authorization") is not None
                          or b"access_token" in (request.args or {}) else "no token")
            request.setHeader(b"www-authenticate", b'Bearer realm="paychan"')
            return self._error(request, ApiError(401, "a valid bearer token is required (DATA_DIR/api.cookie)"))
        try:
            handler, match = _route(method, path)
        except ApiError as e:
            return self._error(request, e)
        gone: list[Failure] = []  # the client went away before the answer was ready
        request.notifyFinish().addErrback(gone.append)
        d: defer.Deferred[Result] = defer.ensureDeferred(handler(self.context, request, match))
        d.addCallbacks(self._answer, self._failed, callbackArgs=(request, gone), errbackArgs=(request, path, gone))
        d.addErrback(lambda f: self.log.failure("api: answering {path} failed", f, path=path))
        return NOT_DONE_YET

    def _answer(self, result: Union[JSON, bytes, None], request: Request, gone: list[Failure]) -> None:
        if result is None or request.finished or gone:  # a stream answers itself
            return
        if isinstance(result, bytes):
            body = result
        else:
            request.setHeader(b"content-type", b"application/json")
            body = jsonenc.dumps(result).encode() + b"\n"
        request.write(body)
        request.finish()

    def _failed(self, failure: Failure, request: Request, path: str, gone: list[Failure]) -> None:
        error = failure.value
        if not isinstance(error, ApiError):
            self.log.failure("api: {path} failed", failure, path=path)
            error = ApiError(500, f"internal error: {type(error).__name__}")
        if request.finished or gone:
            return
        request.write(self._error(request, error))
        request.finish()

    @staticmethod
    def _error(request: Request, error: ApiError) -> bytes:
        request.setResponseCode(error.status)
        request.setHeader(b"content-type", b"application/json")
        return jsonenc.dumps({"error": error.message, **error.extra}).encode() + b"\n"

