"""Fee estimators and the estimatesmartfee conversion (chain/fees.py)."""

from decimal import Decimal
import json

import pytest

from twisted_paychan.chain.fees import (
    CONFIRMATION_TARGETS,
    TARGETS,
    FixedFeeEstimator,
    NoFeeEstimate,
    TableFeeEstimator,
    UnknownTarget,
    btc_per_kvb_to_sat_per_kb,
    fee_rate_from_estimatesmartfee,
)
from twisted_paychan.chain.interfaces import IFeeEstimator
from wallet_conformance import result


def test_fixed():
    est = FixedFeeEstimator(5000)
    assert IFeeEstimator.providedBy(est)
    assert [result(est.fee_rate(t)) for t in TARGETS] == [5000, 5000, 5000]


def test_fixed_floor():
    assert result(FixedFeeEstimator(10).fee_rate("fast")) == 1000
    assert result(FixedFeeEstimator(10, floor=0).fee_rate("fast")) == 10
    assert result(FixedFeeEstimator(1500, floor=2000).fee_rate("fast")) == 2000


def test_unknown_target_is_misuse():
    with pytest.raises(UnknownTarget):
        FixedFeeEstimator(1000).fee_rate("asap")


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1000"])
def test_bad_rates(bad):
    with pytest.raises(ValueError):
        FixedFeeEstimator(bad)


def test_table():
    est = TableFeeEstimator({"fast": 20_000, "normal": 5000, "economy": 500})
    assert IFeeEstimator.providedBy(est)
    assert result(est.fee_rate("fast")) == 20_000
    assert result(est.fee_rate("normal")) == 5000
    assert result(est.fee_rate("economy")) == 1000  # floor


def test_table_needs_every_target():
    with pytest.raises(UnknownTarget, match="missing"):
        TableFeeEstimator({"fast": 1, "normal": 1})
    with pytest.raises(UnknownTarget, match="unknown"):
        TableFeeEstimator({"fast": 1, "normal": 1, "economy": 1, "slow": 1})


def test_every_target_has_a_confirmation_target():
    assert set(CONFIRMATION_TARGETS) == set(TARGETS)
    assert CONFIRMATION_TARGETS["fast"] < CONFIRMATION_TARGETS["normal"] < CONFIRMATION_TARGETS["economy"]


@pytest.mark.parametrize(
    "feerate,sat",
    [
        (Decimal("0.00012345"), 12345),
        ("0.00012345", 12345),
        (0.0001, 10000),
        (0.00002, 2000),
        (Decimal("0.000123456"), 12346),  # more precision than Core prints: round up
        (Decimal("0.00000999"), 1000),  # below the floor
        (0, 1000),
        (1, 100_000_000),
    ],
)
def test_btc_per_kvb_conversion(feerate, sat):
    assert btc_per_kvb_to_sat_per_kb(feerate) == sat


@pytest.mark.parametrize("bad", [-0.0001, "abc", float("nan"), float("inf"), True, 10**9])
def test_btc_per_kvb_rejects(bad):
    with pytest.raises(ValueError):
        btc_per_kvb_to_sat_per_kb(bad)


def test_estimatesmartfee_result():
    text = '{"feerate": 0.00024803, "blocks": 6}'
    assert fee_rate_from_estimatesmartfee(json.loads(text, parse_float=Decimal)) == 24803
    assert fee_rate_from_estimatesmartfee(json.loads(text)) == 24803
    assert fee_rate_from_estimatesmartfee({"feerate": 0.00000500, "blocks": 2}, floor=2000) == 2000


def test_estimatesmartfee_without_estimate():
    with pytest.raises(NoFeeEstimate, match="Insufficient data") as e:
        fee_rate_from_estimatesmartfee({"errors": ["Insufficient data or no feerate found"], "blocks": 0})
    assert e.value.errors == ["Insufficient data or no feerate found"]
    with pytest.raises(NoFeeEstimate):
        fee_rate_from_estimatesmartfee({"blocks": 0})


def test_estimatesmartfee_garbage():
    with pytest.raises(ValueError):
        fee_rate_from_estimatesmartfee({"feerate": None, "blocks": 2})
