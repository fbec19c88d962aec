"""``twistd paychan``: options are validated before anything starts, the plugin is found, and
the service opens its backends on start and releases them on stop."""

import pytest
import pytest_twisted
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python import usage

from twisted_paychan.tap import ChannelServerService, Options, makeService


def test_plugin_is_discoverable():
    assert "paychan" in [p.tapname for p in getPlugins(IServiceMaker)]


def test_defaults():
    o = Options()
    o.parseOptions([])
    assert o["listen"] == "tcp:4242:interface=127.0.0.1"
    assert o["chain"] == "embedded"
    assert o["rpc-listen"] == "tcp:18443:interface=127.0.0.1"
    s = o["settings"]
    assert (s.min_channel_size, s.min_payment, s.versions) == (100_000, 1000, frozenset({1, 2}))


@pytest.mark.parametrize(
    "argv",
    [
        ["--versions", "3"],
        ["--versions", "x"],
        ["--time-window-min", "100"],
        ["--time-window-min", "9000", "--time-window-max", "8000"],
        ["--min-channel", "-5"],
        ["--min-channel", "lots"],
        ["--chain", "ftp://nowhere"],
        ["--reuse-port", "--listen", "unix:/tmp/paychan.sock"],
    ],
)
def test_bad_options_are_refused(argv):
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


@pytest_twisted.ensureDeferred
async def test_service_starts_and_stops(tmp_path):
    o = Options()
    o.parseOptions(["--data-dir", str(tmp_path), "--listen", "tcp:0:interface=127.0.0.1", "--rpc-listen", "tcp:0:interface=127.0.0.1",
                    "--api-listen", "tcp:0:interface=127.0.0.1"])
    svc = makeService(o)
    assert isinstance(svc, ChannelServerService)
    svc.startService()
    assert (tmp_path / "channels.sqlite").exists() and (tmp_path / "wallet.sqlite").exists()
    await svc.stopService()
    # Everything was released: the same data directory opens again.
    svc = makeService(o)
    svc.startService()
    await svc.stopService()


def test_backends_are_child_services_with_the_reactor_passed_in(tmp_path):
    from twisted.internet.task import Clock

    from twisted_paychan import tap

    o = Options()
    o.parseOptions(["--data-dir", str(tmp_path)])
    clock = Clock()
    svc = ChannelServerService(o, clock)
    assert [type(child) for child in svc] == [
        tap.ChainService, tap.WalletService, tap.StoreService, tap.NodeRpcServerService, tap.ChannelsService,
    ]
    assert all(child.reactor is clock for child in svc if hasattr(child, "reactor"))
    o.parseOptions(["--data-dir", str(tmp_path), "--rpc-listen", "none"])
    assert tap.NodeRpcServerService not in [type(child) for child in ChannelServerService(o, clock)]


def test_children_stop_one_after_the_other_last_started_first():
    from twisted.application.service import Service
    from twisted.internet import defer

    from twisted_paychan.tap import _InOrder

    events = []
    pending = {}

    class Child(Service):
        def __init__(self, name):
            self.name = name

        def stopService(self):
            Service.stopService(self)
            events.append(f"stop {self.name}")
            pending[self.name] = defer.Deferred()
            return pending[self.name].addCallback(lambda _: events.append(f"stopped {self.name}"))

    parent = _InOrder()
    for name in ("chain", "store", "channels"):
        Child(name).setServiceParent(parent)
    parent.startService()
    done = parent.stopService()
    assert events == ["stop channels"]
    pending["channels"].callback(None)
    assert events == ["stop channels", "stopped channels", "stop store"]
    pending["store"].callback(None)
    pending["chain"].callback(None)
    assert events[-2:] == ["stop chain", "stopped chain"]
    assert done.called


def test_library_code_never_imports_the_global_reactor_at_module_level():
    """Only entry points pick the reactor (``tap.makeService``, ``cli.runner``), inside a
    function; library modules get it passed in."""
    import ast
    from pathlib import Path

    import twisted_paychan

    offenders = []
    for path in Path(twisted_paychan.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
                if any(alias.name == "reactor" for alias in node.names):
                    offenders.append(str(path))
            if isinstance(node, ast.Import) and any(a.name == "twisted.internet.reactor" for a in node.names):
                offenders.append(str(path))
    assert offenders == []
