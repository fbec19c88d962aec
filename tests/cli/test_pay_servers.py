"""``paychan pay --server``: repeated or a comma list, in the order given; the server id of
several is the first's, so a channel opened with that server alone is resumed with the list."""

from __future__ import annotations

import argparse

import pytest

from twisted_paychan.cli.output import UserError
from twisted_paychan.cli.pay import add_arguments, server_list


def _parsed(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args([*argv, "--value", "100000", "--amount", "1"])


def test_one_server_is_as_before():
    assert server_list(_parsed("--server", "tcp:127.0.0.1:4242").server) == ["tcp:127.0.0.1:4242"]


def test_repeated_and_comma_lists_keep_their_order():
    args = _parsed("--server", "tcp:10.0.0.5:4242,tcp:10.0.0.6:4242", "--server", " tcp:10.0.0.7:4242 ")
    assert server_list(args.server) == ["tcp:10.0.0.5:4242", "tcp:10.0.0.6:4242", "tcp:10.0.0.7:4242"]


def test_a_string_is_one_list_too():
    assert server_list("tcp:a:1,tcp:b:2") == ["tcp:a:1", "tcp:b:2"]


def test_an_empty_list_is_refused_in_words():
    with pytest.raises(UserError, match="--server needs an endpoint"):
        server_list([" , "])
