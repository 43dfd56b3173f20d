"""Tests of the fields of Records made in C (_records.build): a flat JSON object read there,
the same dict as store._parse_fields (json.loads), anything else read by it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BASE_TS
from janus_utils import store as store_module
from janus_utils.store import Record

pytestmark = pytest.mark.skipif(store_module._c_records is None, reason="built without _native/records.c")

scalars = st.one_of(
    st.text(max_size=12), st.text(alphabet="abc .:/\\\"\x01é", max_size=8), st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30), st.booleans(), st.none(),
    st.floats(allow_nan=False), st.just(-0.0),
)
values = st.one_of(scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=3), scalars, max_size=2))
objects = st.dictionaries(st.text(max_size=10), values, max_size=6)


@st.composite
def field_texts(draw: st.DrawFn) -> str:
    """JSON as json.dumps writes it (compact or not), with whitespace, or damaged."""
    value = draw(st.one_of(objects, values))
    separators = draw(st.sampled_from([(", ", ": "), (",", ":"), (" ,\n", " :\t")]))
    text = json.dumps(value, separators=separators, ensure_ascii=draw(st.booleans()))
    text = draw(st.sampled_from(["", " ", "\n"])) + text + draw(st.sampled_from(["", " ", "\r\n", "x", ","]))
    cut = draw(st.integers(min_value=0, max_value=len(text)))
    return text if draw(st.integers(0, 4)) else text[:cut]


def built(fields: Any) -> dict[str, Any]:
    row = (1, BASE_TS, 20, "app", "m", None, None, None, None, None, 7, "T", None, fields, None, None)
    made = store_module._c_records.build(
        [row, row], Record, store_module._SLOT_OFFSETS, store_module._parse_fields, store_module._record, False
    )
    assert made[0].fields is not made[1].fields  # each Record its own dict
    return made[0].fields


def typed(value: Any) -> Any:
    """*value* with each item's type beside it, keys in their order: True is not 1 here."""
    if isinstance(value, dict):
        return [(typed(k), typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, repr(value))


class TestFlatFields:
    @settings(max_examples=500, deadline=None)
    @given(text=field_texts())
    def test_same_dict_as_parse_fields(self, text: str) -> None:
        """Any text, flat or not, JSON or not: the dict _parse_fields makes, types and key order too."""
        assert typed(store_module._parse_fields(text)) == typed(built(text))

    def test_cases(self) -> None:
        """Duplicate keys, big and negative integers, literals, escapes, floats and nesting."""
        for text in ['{"a": 1, "a": 2, "b": 3}', '{"n": -0, "m": 123456789012345678901234567890}',
                     '{"t": true, "f": false, "z": null}', '{"s": "a\\"b"}', '{"x": 1.5}', '{"x": 1e3}',
                     '{"x": {"y": 1}}', '{"x": -}', '{"x": 01}', '{}', ' {} ', '{', '[1]', '{"a": 1,}',
                     '{"é": "ü"}', '{"a": "\x01"}', "", None, b'{"a": 1}', '{"a":1}x']:
            assert typed(store_module._parse_fields(text)) == typed(built(text)), text
