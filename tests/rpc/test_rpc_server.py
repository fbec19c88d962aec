"""The HTTP side of the RPC server: Core's authentication (cookie or user/password, 401),
POST only, JSON-RPC 2.0 statuses over HTTP, batches, ``stop``, and the cookie's life cycle."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any, AsyncIterator, Optional

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError

from rpc_harness import LOOPBACK, Harness, start_harness
from twisted_paychan.chain.embedded.rpc.server import serve_node
from twisted_paychan.rpc import jsonenc
from twisted_paychan.rpc.auth import read_cookie
from twisted_paychan.rpc.connection import RpcAuthError, RpcConnection, RpcConnectionError
from twisted_paychan.rpc.errors import RpcError


@pytest_twisted.async_yield_fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    made = await start_harness(tmp_path)
    try:
        yield made
    finally:
        await made.close()


def _auth(user: str, password: str) -> dict[bytes, list[bytes]]:
    return {b"authorization": [b"Basic " + base64.b64encode(f"{user}:{password}".encode())]}


async def _post(url: str, body: Any, headers: Optional[dict[bytes, list[bytes]]] = None) -> tuple[int, Any, Any]:
    response = await treq.post(url, data=jsonenc.dumps(body).encode(), headers=headers or {})
    content = await treq.content(response)
    return response.code, response.headers, (jsonenc.loads(content) if content else None)


def test_cookie_file_is_private_and_well_formed(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / ".cookie"
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600
    user, password = path.read_text().split(":")
    assert user == "__cookie__"
    assert len(password) == 64 and int(password, 16) >= 0
    assert harness.server.credentials.password == password


@pytest_twisted.ensureDeferred
async def test_cookie_is_removed_at_stop(tmp_path: Path) -> None:
    made = await start_harness(tmp_path)
    assert (tmp_path / ".cookie").exists()
    await made.close()
    assert not (tmp_path / ".cookie").exists()


@pytest_twisted.ensureDeferred
async def test_requests_without_valid_credentials_get_401(harness: Harness) -> None:
    request = {"id": 1, "method": "getblockcount"}
    for headers in (None, _auth("__cookie__", "wrong"), {b"authorization": [b"Bearer xyz"]}):
        code, response_headers, body = await _post(harness.server.url, request, headers)
        assert code == 401
        assert response_headers.getRawHeaders(b"www-authenticate") == [b'Basic realm="jsonrpc"']
        assert body is None
    with pytest.raises(RpcAuthError, match="refused our RPC credentials"):
        await RpcConnection(reactor, harness.server.url).call("getblockcount")


@pytest_twisted.ensureDeferred
async def test_only_post_is_served(harness: Harness) -> None:
    creds = harness.server.credentials
    response = await treq.get(harness.server.url, headers=_auth(creds.user, creds.password))
    assert response.code == 405
    assert await treq.content(response) == b"JSONRPC server handles only POST requests"


@pytest_twisted.ensureDeferred
async def test_json_rpc_2_over_http(harness: Harness) -> None:
    headers = _auth(harness.server.credentials.user, harness.server.credentials.password)
    code, response_headers, body = await _post(harness.server.url, {"jsonrpc": "2.0", "id": 9, "method": "nope"}, headers)
    assert (code, body) == (200, {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 9})
    assert response_headers.getRawHeaders(b"content-type") == [b"application/json"]
    code, _, body = await _post(harness.server.url, {"id": 9, "method": "nope"}, headers)
    assert code == 404 and body["error"]["code"] == -32601
    code, _, body = await _post(harness.server.url, {"jsonrpc": "2.0", "method": "getblockcount"}, headers)
    assert (code, body) == (204, None)
    code, _, body = await _post(harness.server.url, {"jsonrpc": "2.0", "id": "p", "method": "getblockhash", "params": {"height": 0}}, headers)
    assert body["result"] == "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"


@pytest_twisted.ensureDeferred
async def test_batch_over_http(harness: Harness) -> None:
    count, missing, bad = await harness.connection.batch(
        [("getblockcount", []), ("getblockhash", [10_000]), ("nope", [])]
    )
    assert count == harness.node.height
    assert (missing.code, missing.message) == (-8, "Block height out of range")
    assert bad.code == -32601


@pytest_twisted.ensureDeferred
async def test_user_and_password_instead_of_a_cookie(tmp_path: Path) -> None:
    from chain_backends import embedded_backend

    inner = embedded_backend(tmp_path)
    server = await serve_node(reactor, inner.chain.node, LOOPBACK, user="alice", password="s3cret:x")  # type: ignore[attr-defined]
    try:
        assert not (tmp_path / "node" / ".cookie").exists()
        connection = RpcConnection(reactor, f"http://alice:s3cret%3Ax@127.0.0.1:{server.port_number}")
        assert await connection.call("getblockcount") == 101
        await connection.close()
        with pytest.raises(RpcAuthError):
            await RpcConnection(reactor, f"http://alice:wrong@127.0.0.1:{server.port_number}").call("getblockcount")
    finally:
        await server.stop()
        inner.close()


def test_user_without_password_is_refused(tmp_path: Path) -> None:
    from chain_backends import embedded_backend

    inner = embedded_backend(tmp_path)
    try:
        with pytest.raises(ValueError, match="both"):
            serve_node(reactor, inner.chain.node, LOOPBACK, user="alice")  # type: ignore[attr-defined]
    finally:
        inner.close()


@pytest_twisted.ensureDeferred
async def test_stop_answers_then_calls_on_stop(tmp_path: Path) -> None:
    from chain_backends import embedded_backend

    inner = embedded_backend(tmp_path)
    stopped: Deferred[None] = Deferred()
    server = await serve_node(reactor, inner.chain.node, LOOPBACK, cookie_dir=tmp_path, on_stop=lambda: stopped.callback(None))  # type: ignore[attr-defined]
    try:
        connection = RpcConnection(reactor, server.url, cookie_path=tmp_path / ".cookie")
        assert await connection.call("stop") == "paychan regtest node stopping"
        await stopped
        await connection.close()
    finally:
        await server.stop()
        inner.close()


@pytest_twisted.ensureDeferred
async def test_listen_failure_removes_the_cookie(harness: Harness, tmp_path: Path) -> None:
    from chain_backends import embedded_backend

    other = embedded_backend(tmp_path / "other")
    try:
        with pytest.raises(CannotListenError):
            await serve_node(
                reactor, other.chain.node, f"tcp:{harness.server.port_number}:interface=127.0.0.1"  # type: ignore[attr-defined]
            )
        assert not (tmp_path / "other" / "node" / ".cookie").exists()
    finally:
        other.close()


@pytest_twisted.ensureDeferred
async def test_client_rereads_a_new_cookie_after_a_restart(tmp_path: Path) -> None:
    from chain_backends import embedded_backend

    inner = embedded_backend(tmp_path)
    node = inner.chain.node  # type: ignore[attr-defined]
    server = await serve_node(reactor, node, LOOPBACK, cookie_dir=tmp_path)
    port = server.port_number
    connection = RpcConnection(reactor, server.url, cookie_path=tmp_path / ".cookie")
    try:
        assert await connection.call("getblockcount") == 101
        old = read_cookie(tmp_path / ".cookie").password
        await server.stop()
        await connection.close()
        with pytest.raises(RpcConnectionError, match=f"cannot reach http://127.0.0.1:{port}"):
            await connection.call("getblockcount")
        server = await serve_node(reactor, node, f"tcp:{port}:interface=127.0.0.1", cookie_dir=tmp_path)
        assert read_cookie(tmp_path / ".cookie").password != old
        assert await connection.call("getblockcount") == 101
    finally:
        await connection.close()
        await server.stop()
        inner.close()


@pytest_twisted.ensureDeferred
async def test_missing_cookie_file_is_an_auth_error(tmp_path: Path, harness: Harness) -> None:
    with pytest.raises(RpcAuthError, match="cannot read the RPC cookie"):
        await RpcConnection(reactor, harness.server.url, cookie_path=tmp_path / "nope").call("getblockcount")


@pytest_twisted.ensureDeferred
async def test_rpc_error_carries_code_and_message(harness: Harness) -> None:
    with pytest.raises(RpcError) as caught:
        await harness.connection.call("getblockhash", -1)
    assert (caught.value.code, caught.value.message) == (-8, "Block height out of range")


@pytest_twisted.ensureDeferred
async def test_a_cookie_given_as_a_password_goes_stale_and_says_so(tmp_path: Path) -> None:
    """bitcoind writes a new cookie at every start: its contents passed as credentials cannot be
    read again, and the 401 after a restart says to give the file instead."""
    from chain_backends import embedded_backend

    inner = embedded_backend(tmp_path)
    node = inner.chain.node  # type: ignore[attr-defined]
    server = await serve_node(reactor, node, LOOPBACK, cookie_dir=tmp_path)
    port = server.port_number
    cookie = read_cookie(tmp_path / ".cookie")
    connection = RpcConnection(reactor, server.url, credentials=(cookie.user, cookie.password))
    try:
        assert await connection.call("getblockcount") == 101
        await server.stop()
        await connection.close()
        server = await serve_node(reactor, node, f"tcp:{port}:interface=127.0.0.1", cookie_dir=tmp_path)
        with pytest.raises(RpcAuthError, match="give the cookie file with --rpc-cookie"):
            await connection.call("getblockcount")
    finally:
        await connection.close()
        await server.stop()
        inner.close()
