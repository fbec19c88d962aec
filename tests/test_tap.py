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
    ],
)
def test_bad_options_are_refused(argv):
    with pytest.raises(usage.UsageError):
        Options().parseOptions(argv)


@pytest_twisted.ensureDeferred
async def test_service_starts_and_stops(tmp_path):
    o = Options()
    o.parseOptions(["--data-dir", str(tmp_path), "--listen", "tcp:0:interface=127.0.0.1", "--rpc-listen", "tcp:0:interface=127.0.0.1"])
    svc = makeService(o)
    assert isinstance(svc, ChannelServerService)
    svc.startService()
    assert (tmp_path / "channels.sqlite").exists() and (tmp_path / "wallet.sqlite").exists()
    await svc.stopService()
    # Everything was released: the same data directory opens again.
    svc = makeService(o)
    svc.startService()
    await svc.stopService()
