"""The native prefilter never lets through text that the Python redactor would change."""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus_utils import security
from janus_utils._ring import Ring

FRAGMENTS = [
    "password=", "Token: ", "Bearer ", "eyJhbGciOi", "AKIA", "ghp_", "xoxb-", "-----BEGIN",
    "https://u:p@h/", "4111 1111 1111 1111", "api_key", "Cookie", "session", "ſecret", "K",
    "user 42", " ", "-", "://", "@", "\n", "é", "\udc80", "0123456789", "pass", "wd", "ecre",
]


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    path: Path = tmp_path_factory.mktemp("pf") / "pf.ring"
    with Ring(path, 1 << 16) as r:
        r.set_prefilter(security.PREFILTER_TOKENS)
        yield r


texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=12)), max_size=12).map("".join)


class TestPrefilterAgreesWithPython:
    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=texts)
    def test_python_suspect_implies_native_suspect(self, ring: Ring, text: str) -> None:
        """Whatever Python's prefilter flags, the C scan of the UTF-8 bytes flags too."""
        if security.might_contain_secret(text):
            assert ring.suspect(text.encode("utf-8", "surrogatepass"))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=texts)
    def test_native_clean_means_redaction_changes_nothing(self, ring: Ring, text: str) -> None:
        """A record the C scan passes, as the logger encodes it, holds nothing to redact."""
        record = (1, 0, 20, "svc", text, {"note": text}, None, 1, "MainThread")
        if not ring.suspect(marshal.dumps(record, 2)):
            assert text == security.redact_text(text)

    def test_known_secrets_are_flagged(self, ring: Ring) -> None:
        """Each family of secret sets the native prefilter off."""
        for text in ["pw password=x", "Authorization: Bearer abc", "eyJhbGciOiJIUzI1NiJ9.e.s",
                     "AKIAIOSFODNN7EXAMPLE", "card 4111-1111-1111-1111", "postgres://a:b@h/d",
                     "-----BEGIN PRIVATE KEY-----"]:
            assert ring.suspect(text.encode()), text

    def test_ordinary_log_text_is_not_flagged(self, ring: Ring) -> None:
        """Common log lines pass the prefilter, so they skip the redaction pass."""
        for text in ["user 42 logged in from 10.0.0.1", "GET /orders/17 200 in 12 ms",
                     "cache miss for key-less lookup", "https://example.com/docs?page=2"]:
            assert not ring.suspect(text.encode()), text

    def test_many_url_schemes_stay_linear_and_correct(self, ring: Ring) -> None:
        """Repeated '://' with no '@' is not suspect; an '@' after any of them is."""
        assert not ring.suspect(b"https://u:" * 40_000)
        assert ring.suspect(b"https://u:" * 1000 + b"p@h")
        assert not ring.suspect(b"x://ab c@d")

    def test_tokens_may_start_with_a_digit(self, tmp_path: Path) -> None:
        """A configured key like '2fa' is found although its first byte is a digit."""
        redactor = security.Redactor(extra_keys=("2fa",))
        with Ring(tmp_path / "d.ring", 1 << 16) as r:
            r.set_prefilter(redactor.prefilter_tokens)
            text = "login 2fa=918273"
            assert redactor.might_contain_secret(text)
            assert r.suspect(text.encode())
