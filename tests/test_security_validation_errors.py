"""Validation errors (pydantic, FastAPI): the rejected input of a sensitive field is redacted.

The field's name and its value are apart in these texts, so neither the
key=value rule nor the dict rule sees them as a pair:

* the errors list, as a repr or as JSON:
  ``'loc': ('body', 'password'), 'msg': '...', 'input': 'VALUE'``;
* pydantic's text (``str(ValidationError)``): the dotted field path on a line,
  then ``  <msg> [type=..., input_value='VALUE', input_type=str]``;
* ``exc.errors()`` as a value: ``{"loc": (...), "input": VALUE}``.

The input is secret when a part of the field's path is a sensitive key by the
usual key rules; other fields keep their input.  Both prefilters (Python's and
the C ring's) must send such text to the full pass.
"""

from __future__ import annotations

import json
import keyword
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus_utils import _redact, security
from janus_utils._ring import Ring

pydantic = pytest.importorskip("pydantic")

SENSITIVE = sorted(security.DEFAULT_SENSITIVE_KEYS)
# What a password may hold, quotes and backslashes included; no letter-only run
# another rule could read as a word of its own.
VALUE_CHARS = string.ascii_letters + string.digits + "!#$%()*+-./:;<=>?@[]^_{|}~ '\"\\"


def _model(field: str, parent: str | None) -> Any:
    """A model whose *field* (a str, at least 40 characters) refuses shorter input; nested under *parent*."""
    inner = pydantic.create_model("Inner", **{field: (str, pydantic.Field(min_length=40))})
    if parent is None:
        return inner
    return pydantic.create_model("Outer", **{parent: (inner, ...)})


def _error(field: str, value: str, parent: str | None = None) -> Any:
    model = _model(field, parent)
    data: dict[str, Any] = {field: value}
    with pytest.raises(pydantic.ValidationError) as caught:
        model(**({parent: data} if parent else data))
    return caught.value


def _texts(exc: Any) -> dict[str, str]:
    """Every way a user's log call writes the error."""
    errors = exc.errors(include_url=False)
    return {
        "str": str(exc),
        "errors_repr": repr(errors),
        "json_compact": exc.json(),
        "json_spaced": json.dumps(errors),
        "json_in_json": json.dumps({"detail": exc.json()}),
    }


def _usable(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and not name.startswith(("model_", "_"))
        and not hasattr(pydantic.BaseModel, name)
    )


sensitive_fields = st.one_of(
    st.sampled_from(SENSITIVE),
    st.tuples(st.sampled_from(["db", "user", "new", "x"]), st.sampled_from(SENSITIVE)).map("_".join),
).filter(_usable)
plain_fields = (
    st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True)
    .filter(_usable)
    .filter(lambda name: security.DEFAULT_REDACTOR.secret_kind(name, "x") is None)
)
parents = st.one_of(st.none(), st.sampled_from(["user", "body", "account", "data"]))
secret_values = st.text(VALUE_CHARS, min_size=6, max_size=24).map(lambda v: f"Zq{v}9")
plain_values = st.text(string.ascii_letters, min_size=3, max_size=24).map(lambda v: f"Zq{v}")


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    path: Path = tmp_path_factory.mktemp("verr") / "verr.ring"
    with Ring(path, 1 << 16) as r:
        r.set_prefilter(security.PREFILTER_TOKENS)
        yield r


class TestTheUsersExamples:
    def test_errors_list_repr(self) -> None:
        """FastAPI's error repr: the password's input becomes a marker, type/loc/msg stay."""
        text = (
            "{'type': 'string_too_short', 'loc': ('body', 'password'), "
            "'msg': 'String should have at least 12 characters', 'input': 'hunter2xyz', 'ctx': {'min_length': 12}}"
        )
        expected = text.replace("'hunter2xyz'", "'[REDACTED:password]'")
        assert expected == security.redact_text(text)

    def test_errors_list_json(self) -> None:
        """The same error as JSON."""
        text = '{"type": "string_too_short", "loc": ["body", "password"], "msg": "too short", "input": "hunter2xyz"}'
        assert text.replace('"hunter2xyz"', '"[REDACTED:password]"') == security.redact_text(text)

    @pytest.mark.parametrize("path", ["password", "user.password", "body.password", "pin"])
    def test_pydantic_text(self, path: str) -> None:
        """pydantic's text form, the field path plain or dotted; a pin too, whose line ends in "pin"."""
        text = (
            f"1 validation error for Login\n{path}\n  String should have at least 12 characters "
            "[type=string_too_short, input_value='hunter2xyz', input_type=str]\n"
            "    For further information visit https://errors.pydantic.dev/2.14/v/string_too_short"
        )
        kind = path.rsplit(".", 1)[-1]
        assert text.replace("'hunter2xyz'", f"'[REDACTED:{kind}]'") == security.redact_text(text)

    def test_username_keeps_its_input(self) -> None:
        """A field that is no secret keeps its rejected value in every form."""
        exc = _error("username", "bob")
        for form, text in _texts(exc).items():
            assert text == security.redact_text(text), form

    def test_a_one_item_loc_keeps_its_bracket(self) -> None:
        """('pin',) is a field path, not a (key, value) pair: the closing bracket stays."""
        text = "{'type': 'int_parsing', 'loc': ('pin',), 'msg': 'not an int', 'input': '12a4'}"
        assert text.replace("'12a4'", "'[REDACTED:pin]'") == security.redact_text(text)

    def test_a_list_input_is_redacted_whole(self) -> None:
        """The input of a sensitive field that is a list or a dict: all of it, to its closing bracket."""
        text = "{'loc': ('body', 'token'), 'msg': 'bad', 'input': ['a]b', ('c', {'d': 'e'})], 'ctx': {}}"
        assert "{'loc': ('body', 'token'), 'msg': 'bad', 'input': [REDACTED:token], 'ctx': {}}" == (
            security.redact_text(text)
        )

    def test_a_status_under_a_status_key_stays(self) -> None:
        """"auth" and "pass" keep a status as their input, as they do as keys."""
        text = "{'loc': ('auth',), 'msg': 'bad', 'input': 'ok'}"
        assert text == security.redact_text(text)

    def test_json_inside_json_keeps_no_tail(self) -> None:
        """A quote in a value of JSON inside a JSON string does not end the value."""
        text = json.dumps({"detail": json.dumps({"password": 'Zq"000009', "note": "kept"})})
        assert '{"detail": "{\\"password\\": \\"[REDACTED:password]\\", \\"note\\": \\"kept\\"}"}' == (
            security.redact_text(text)
        )

    def test_errors_as_a_value(self) -> None:
        """exc.errors() given as a field: the dict rule redacts a sensitive field's input."""
        exc = _error("password", "hunter2xyz", parent="user")
        redacted = security.redact_value(exc.errors())
        assert "[REDACTED:password]" == redacted[0]["input"]
        assert ("user", "password") == redacted[0]["loc"]
        assert "hunter2xyz" not in repr(redacted)
        plain = _error("username", "bob").errors()
        assert plain == security.redact_value(plain)


class TestEveryFieldName:
    @settings(max_examples=150, deadline=None)
    @given(field=sensitive_fields, parent=parents, value=secret_values)
    def test_a_sensitive_field_s_input_is_redacted_in_every_form(
        self, field: str, parent: str | None, value: str
    ) -> None:
        """The value is in no form after redaction; the error's loc and msg are."""
        exc = _error(field, value, parent)
        for form, text in _texts(exc).items():
            redacted = security.redact_text(text)
            assert value[2:-1] not in redacted, (form, text, redacted)
            assert field in redacted, form
            assert "at least 40 characters" in redacted, form
            assert redacted == security.redact_text(redacted), form

    @settings(max_examples=150, deadline=None)
    @given(field=plain_fields, parent=parents, value=plain_values)
    def test_a_plain_field_keeps_its_input(self, field: str, parent: str | None, value: str) -> None:
        """A field that is no sensitive key, under a parent that is none either: unchanged."""
        exc = _error(field, value, parent)
        for form, text in _texts(exc).items():
            assert text == security.redact_text(text), form


class TestBothPrefiltersLetItThrough:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(field=sensitive_fields, parent=parents, value=secret_values)
    def test_text_the_full_pass_changes_is_flagged(
        self, ring: Ring, field: str, parent: str | None, value: str
    ) -> None:
        """Where the full pass finds a secret input, Python's prefilter and the C scan both flag the text."""
        for form, text in _texts(_error(field, value, parent)).items():
            assert _redact.DEFAULT_REDACTOR._redact_unfiltered(text) != text, form
            assert security.might_contain_secret(text), form
            assert ring.suspect(text.encode()), form

    @pytest.mark.parametrize("key", ["pin", "pw", "sid", "auth", "pass"])
    def test_a_field_line_ending_in_a_short_key(self, ring: Ring, key: str) -> None:
        """pydantic's text puts a newline after the field: no "pin$" token matches it, "input_value=" does."""
        text = f"{key}\n  Field required [type=string_too_short, input_value='83917', input_type=str]"
        assert security.might_contain_secret(text)
        assert ring.suspect(text.encode())
        assert "83917" not in security.redact_text(text)
