"""JSON-RPC request/reply rules (rpc.protocol), without HTTP: Core's legacy 1.0 and 2.0
behaviour, batches, notifications, parse errors and the HTTP status of each."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from twisted_paychan.rpc import jsonenc
from twisted_paychan.rpc.errors import RpcError
from twisted_paychan.rpc.protocol import Params, handle


def dispatch(method: str, params: Params) -> Any:
    if method == "echo":
        return params
    if method == "fail":
        raise RpcError(-8, "bad parameter")
    if method == "crash":
        raise ZeroDivisionError("division by zero")
    raise RpcError(-32601, "Method not found")


def reply(body: object) -> tuple[int, Any]:
    r = handle(json.dumps(body).encode(), dispatch)
    return r.status, None if r.body is None else jsonenc.loads(r.body)


def test_legacy_request_has_result_error_and_id() -> None:
    assert reply({"id": 7, "method": "echo", "params": [1, "a"]}) == (200, {"result": [1, "a"], "error": None, "id": 7})
    assert reply({"jsonrpc": "1.0", "id": "x", "method": "echo"}) == (200, {"result": [], "error": None, "id": "x"})


def test_legacy_errors_use_http_error_statuses() -> None:
    assert reply({"id": 1, "method": "fail"}) == (500, {"result": None, "error": {"code": -8, "message": "bad parameter"}, "id": 1})
    assert reply({"id": 1, "method": "nope"})[0] == 404
    status, body = reply({"id": 1, "method": 5})
    assert (status, body["error"]["code"], body["id"]) == (400, -32600, 1)


def test_v2_errors_are_http_200_without_result() -> None:
    status, body = reply({"jsonrpc": "2.0", "id": 3, "method": "nope"})
    assert (status, body) == (200, {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": 3})
    assert reply({"jsonrpc": "2.0", "id": 3, "method": "echo", "params": {"a": 1}}) == (
        200,
        {"jsonrpc": "2.0", "result": {"a": 1}, "id": 3},
    )


def test_v2_notification_gets_no_content() -> None:
    assert reply({"jsonrpc": "2.0", "method": "echo"}) == (204, None)
    # A null id is an id, not a notification.
    assert reply({"jsonrpc": "2.0", "id": None, "method": "echo"})[0] == 200


def test_an_unexpected_exception_is_misc_error() -> None:
    status, body = reply({"jsonrpc": "2.0", "id": 1, "method": "crash"})
    assert body["error"] == {"code": -1, "message": "division by zero"}


def test_bad_json_is_a_parse_error() -> None:
    r = handle(b"{not json", dispatch)
    assert r.status == 500
    assert jsonenc.loads(r.body or b"") == {"result": None, "error": {"code": -32700, "message": "Parse error"}, "id": None}
    assert jsonenc.loads(handle(b"42", dispatch).body or b"")["error"]["message"] == "Top-level object parse error"


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"id": 1, "jsonrpc": 2, "method": "echo"}, "jsonrpc field must be a string"),
        ({"id": 1, "jsonrpc": "3.0", "method": "echo"}, "JSON-RPC version not supported"),
        ({"id": 1}, "Missing method"),
        ({"id": 1, "method": "echo", "params": 5}, "Params must be an array or object"),
    ],
)
def test_invalid_requests(request_: dict[str, Any], message: str) -> None:
    status, body = reply(request_)
    assert (status, body["error"]) == (400, {"code": -32600, "message": message})


def test_batch_answers_each_in_order_and_skips_notifications() -> None:
    status, body = reply(
        [
            {"id": 1, "method": "echo", "params": [1]},
            {"jsonrpc": "2.0", "method": "echo"},  # notification
            {"jsonrpc": "2.0", "id": 2, "method": "fail"},
            {"id": 3, "method": "nope"},
            "garbage",
        ]
    )
    assert status == 200
    assert body == [
        {"result": [1], "error": None, "id": 1},
        {"jsonrpc": "2.0", "error": {"code": -8, "message": "bad parameter"}, "id": 2},
        {"result": None, "error": {"code": -32601, "message": "Method not found"}, "id": 3},
        {"result": None, "error": {"code": -32600, "message": "Invalid Request object"}, "id": None},
    ]


def test_batch_edge_cases() -> None:
    assert reply([]) == (200, [])
    assert reply([{"jsonrpc": "2.0", "method": "echo"}]) == (204, None)


def test_amounts_stay_exact_both_ways() -> None:
    r = handle(b'{"id":1,"method":"echo","params":[0.1, 21000000.00000001]}', dispatch)
    assert r.body == b'{"result":[0.1,21000000.00000001],"error":null,"id":1}\n'
    assert jsonenc.dumps({"v": jsonenc.btc(1)}) == '{"v":0.00000001}'
    assert jsonenc.sat(Decimal("0.00000001")) == 1
    with pytest.raises(ValueError):
        jsonenc.sat(Decimal("0.000000001"))
