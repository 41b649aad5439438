"""The JSON form of metrics."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from nas.storage._records import decode_metrics, encode_metrics

METRICS = st.dictionaries(st.text(), st.floats(allow_nan=True, allow_infinity=True) | st.integers())


@given(METRICS)
def test_metrics_round_trip_through_strict_json(metrics: dict[str, float]) -> None:
    text = encode_metrics(metrics)
    json.loads(text, parse_constant=lambda constant: 1 / 0)  # no NaN/Infinity tokens
    decoded = decode_metrics(text)
    assert decoded.keys() == metrics.keys()
    for name, value in metrics.items():
        assert decoded[name] == float(value) or (math.isnan(value) and math.isnan(decoded[name]))
