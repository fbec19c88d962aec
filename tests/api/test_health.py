"""``/v1/health``'s checks on the in-memory backends and a Clock: a stale tip, a backend that
never answers, a chain that reports its own trouble."""

from twisted.internet import defer
from twisted.internet.task import Clock

from twisted_paychan.api.health import HealthCheck
from twisted_paychan.chain.memory import MemoryChain
from twisted_paychan.store.memory import MemoryChannelStore
from twisted_paychan.wallet.memory import MemoryWallet


def _report(check, clock=None, advance=0.0):
    d = defer.ensureDeferred(check.check())
    out = []
    d.addBoth(out.append)
    for _ in range(5):  # each hung backend waits out its own deadline
        if out or clock is None:
            break
        clock.advance(advance)
    assert out, "the check did not finish"
    return out[0]


def _backends():
    clock = Clock()
    clock.advance(1_800_000_000)
    chain = MemoryChain(clock)
    return clock, chain, MemoryWallet(chain), MemoryChannelStore()


def test_healthy_then_stale_tip():
    clock, chain, wallet, store = _backends()
    check = HealthCheck(store, wallet, chain, clock, max_tip_age=3600)
    report = _report(check)
    assert report.ok and report.checks == {"store": "ok", "wallet": "ok", "chain": "ok"}
    clock.advance(3601)
    report = _report(check)
    assert not report.ok and report.checks["chain"] == "stale"
    assert "old" in report.reasons[0]
    chain.mine(1)  # a new block: recent again
    assert _report(check).ok
    # Regtest: no recency check (blocks come only when someone mines).
    clock.advance(10 * 86400)
    assert _report(HealthCheck(store, wallet, chain, clock, max_tip_age=None)).ok


def test_a_backend_that_never_answers_times_out():
    clock, chain, wallet, store = _backends()
    # A node that accepted the calls and went quiet (the wallet's first look is its one scan).
    chain.tip = chain.scan_outputs = lambda *args: defer.Deferred()
    check = HealthCheck(store, wallet, chain, clock, max_tip_age=None, timeout=5.0)
    report = _report(check, clock, advance=5.0)
    # The wallet asks the chain too: both wait out their deadline, and say so.
    assert not report.ok and report.checks == {"store": "ok", "wallet": "timeout", "chain": "timeout"}
    assert report.to_json()["status"] == "unhealthy"


def test_a_chain_that_reports_trouble():
    clock, chain, wallet, store = _backends()
    check = HealthCheck(store, wallet, chain, clock, max_tip_age=None, chain_problem=lambda: "unreachable: refused")
    report = _report(check)
    assert not report.ok and report.reasons == ["chain: unreachable: refused"]
