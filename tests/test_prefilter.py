"""The native prefilter never lets through text or a record that the Python redactor would change."""

from __future__ import annotations

import contextvars
import marshal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import secret_corpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from janus_utils import _redact, _speedups, security
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


# --- word anchors, one-byte tokens, and the record check -------------------------


def _record(message: str, fields: object) -> bytes:
    """A record as the logger encodes it (the Python path's marshal bytes)."""
    return marshal.dumps((1, 1_700_000_000_000_000_000, 20, "svc", message, fields, None, 1, "t"), 2)


def _emitter(ring: Ring) -> Any:
    """A C encoder pushing into *ring* with the prefilter on, as the logger sets one up."""
    addr, push, suspect = ring.native()
    return _speedups.Emitter(
        addr, push, suspect, ring, True, 1, 10**6, 10**9, [],
        contextvars.ContextVar("test_context", default={}),
        lambda msg, args: msg % args, lambda: "t", threading.local(),
    )


class TestWordAnchors:
    TOKENS = ("^sk-", "pin$", "^aws$", "token")

    @pytest.mark.parametrize(
        ("text", "as_text", "as_key"),
        [
            (b"key sk-abc", True, True),
            (b"sk-abc", True, True),
            (b"task-abc", False, False),
            (b"_sk-abc", True, True),  # "_" is not a letter or digit
            (b"pin=1234", True, True),
            (b"PIN: 1", True, True),
            (b'"pin": 1', True, True),
            (b"--pin 1234", True, True),
            (b"user_pin=1", True, True),
            (b"ping mapping shipping", False, False),
            (b"pinned", False, False),
            (b"pin", False, True),  # as a key, its end ends the word
            (b"userPin", False, True),
            (b"svc.pin", False, True),
            (b"enter your pin", False, True),
            (b"aws", False, True),
            (b"aws_key=x", True, True),
            (b"laws: x", False, False),
            (b"tokens", True, True),
        ],
    )
    def test_c_and_python_read_anchors_alike(
        self, tmp_path: Path, text: bytes, as_text: bool, as_key: bool
    ) -> None:
        """"^tok" must start a word; "tok$" must be followed by what may follow a key
        word (= : quote space ...), or end a key.  C and Python agree."""
        with Ring(tmp_path / "a.ring", 1 << 16) as r:
            r.set_prefilter(self.TOKENS)
            assert (as_text, as_key) == (r.suspect(text), r.suspect_key(text))
        assert as_text == _redact._Prefilter(self.TOKENS)(text.decode())
        low = text.lower()
        assert as_text == any(secret_corpus.token_matches(t, low) for t in self.TOKENS)
        assert as_key == any(secret_corpus.token_matches(t, low, key=True) for t in self.TOKENS)

    def test_no_token_holds_a_colon(self) -> None:
        """The C encoder checks a field name as if ':' followed it: no token may contain one."""
        for redactor in (security.DEFAULT_REDACTOR, security.Redactor(pii=True)):
            assert [] == [t for t in redactor.prefilter_tokens if ":" in t]

    def test_one_byte_tokens(self, tmp_path: Path) -> None:
        """A one-character token (what pii=True adds: "@" and the digits) is found anywhere."""
        with Ring(tmp_path / "o.ring", 1 << 16) as r:
            r.set_prefilter(("@", "7", "password"))
            assert r.suspect(b"mail bob@example.org")
            assert r.suspect(b"x7")
            assert r.suspect(b"7")
            assert not r.suspect(b"nothing here")

    def test_pii_redactor_tokens_install(self, tmp_path: Path) -> None:
        """A pii=True redactor's tokens fit the C table and flag e-mail addresses and digits."""
        redactor = security.Redactor(pii=True)
        with Ring(tmp_path / "p.ring", 1 << 16) as r:
            r.set_prefilter(redactor.prefilter_tokens)
            assert r.suspect(b"mail erin@example.org")
            assert r.suspect(b"ssn 536-90-4399")
            assert not r.suspect(b"no personal data")


class TestRecordCheck:
    def test_each_string_is_checked_on_its_own(self, ring: Ring) -> None:
        """A key such as "pin" ends where its string ends; in the bytes a type code follows it."""
        data = _record("ok", {"pin": "1234"})
        assert not ring.suspect(data)  # "pinu" in the raw bytes: the anchor does not hold
        assert ring.suspect_record(data)
        assert not ring.suspect_record(_record("ok", {"ping": "1234"}))

    def test_keys_and_list_items_are_keys_values_are_text(self, ring: Ring) -> None:
        """A dict key and a list item (a header pair's name, an argv option) may be a key;
        a value, the message and the logger's name are text."""
        assert ring.suspect_record(_record("ok", {"headers": [["x-pin", "1"]]}))
        assert ring.suspect_record(_record("ok", {"argv": ["unlock", "--pin", "1"]}))
        assert not ring.suspect_record(_record("ok", {"component": "pin"}))
        assert not ring.suspect_record(_record("enter your pin", None))
        data = marshal.dumps((1, 0, 20, "svc.auth", "ok", None, None, 1, "t"), 2)
        assert not ring.suspect_record(data)

    @pytest.mark.parametrize(
        ("fields", "expected"),
        [
            ({"n": 4111111111111111}, True),
            ({"n": 4111111111111112}, False),  # Luhn-invalid
            ({"n": 1710498153123}, False),  # epoch milliseconds: issuer digit 1
            ({"n": -4111111111111111}, False),
            ({"n": [1, {"deep": 5555555555554444}]}, True),
            ({"n": 2**70}, False),
            ({"n": 378282246310005}, True),
            ({4111111111111111: "x"}, True),  # an int key too
            (None, False),
        ],
    )
    def test_int_fields_with_the_card_rule(self, ring: Ring, fields: object, expected: bool) -> None:
        """Ints inside the fields are checked as card numbers; the record's own ints are not."""
        assert expected == ring.suspect_record(_record("ok", fields))

    def test_the_timestamp_is_not_a_field(self, ring: Ring) -> None:
        """A Luhn-valid timestamp (it will happen after 2033) does not flag the record."""
        data = marshal.dumps((1, 4111111111111111, 20, "svc", "ok", None, None, 1, "t"), 2)
        assert not ring.suspect_record(data)

    @pytest.mark.parametrize("data", [b"", b"(", b"\x00\x01", b"(\x09\x00\x00\x00i", _record("ok", None) + b"x"])
    def test_bytes_it_cannot_read_are_suspect(self, ring: Ring, data: bytes) -> None:
        """Anything but a whole record it reads goes to the Python redactor."""
        assert ring.suspect_record(data)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(value=st.one_of(
        st.integers(min_value=-(2**80), max_value=2**80),
        st.integers(min_value=10**12, max_value=10**19),
        st.sampled_from([4111111111111111, 5555555555554444, 378282246310005, 6011111111111117]),
    ))
    def test_the_c_card_rule_is_the_python_one(self, ring: Ring, value: int) -> None:
        """jr_card_number and is_card_number agree on every int."""
        assert security.is_card_number(value) == ring.suspect_record(_record("ok", {"n": value}))

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=texts, key=texts)
    def test_native_clean_record_means_redaction_changes_nothing(self, ring: Ring, text: str, key: str) -> None:
        """A record the record check passes holds nothing the redactor would change, keys included."""
        fields = {key: text, "list": [text, (key, text)]}
        try:
            data = _record(text, fields)
        except ValueError:
            return
        if not ring.suspect_record(data):
            assert text == security.redact_text(text)
            assert fields == security.redact_value(fields)


class TestEveryCorpusCaseIsCaughtByBothPrefilters:
    @pytest.mark.parametrize("case", secret_corpus.CASES, ids=[c.id for c in secret_corpus.CASES])
    def test_record_check_flags_it(self, ring: Ring, case: secret_corpus.Case) -> None:
        """The Python path's checked push flags the record each corpus case makes."""
        message, fields = _as_record_parts(case)
        assert ring.suspect_record(marshal.dumps((1, 0, 20, "corpus", message, fields, None, 1, "t"), 2))

    @pytest.mark.parametrize(
        "case",
        [c for c in secret_corpus.CASES if c.form in ("message", "argument", "field", "int_field", "dict_field")],
        ids=lambda c: c.id,
    )
    def test_c_encoder_hands_it_back(self, ring: Ring, case: secret_corpus.Case) -> None:
        """The C encoder does not push a corpus case: it hands the record back for redaction."""
        message, fields = _as_record_parts(case)
        result = _emitter(ring).push(20, "corpus", {}, message, (), fields or {})
        assert result is not None and result[0] is False


class TestCEncoderFieldNames:
    def test_field_names_are_checked_as_keys(self, ring: Ring) -> None:
        """A field named "pin" is handed back; "pin" as a value or in the logger's name is pushed,
        also when the very same str object was seen as a value first."""
        em = _emitter(ring)
        word = "pin"
        assert em.push(20, "svc.auth", {}, "ok", (), {"component": word}) is None
        handed_back = em.push(20, "svc", {}, "ok", (), {word: "1234"})
        assert handed_back is not None and handed_back[0] is False
        assert em.push(20, "svc", {}, "ok", (), {"component": word}) is None


def _as_record_parts(case: secret_corpus.Case) -> tuple[str, dict[str, object] | None]:
    """The message and fields a corpus case's log call makes (tracebacks: the line as text)."""
    form, value = case.form, case.value
    if form == "argument":
        return f"configured with {value}", None
    if form == "field":
        return "event", {"detail": value}
    if form == "int_field":
        return "charge", {"amount_ref": value}
    if form == "nested":
        return "payload", {"body": {"items": [{"note": value}], "n": 1}}
    if form == "nested_int":
        return "payload", {"body": {"items": [{"ref": value}]}}
    if form == "headers":
        return "request", {"headers": value}
    if form == "argv":
        return "started", {"argv": value}
    if form in ("dict_field", "bound", "stdlib_extra"):
        return "config", dict(value)
    return str(value), None  # message, exception, traceback, stdlib: the text itself


# --- the C table against the rule written out ----------------------------------------

TOKEN_SETS = {
    "default": security.PREFILTER_TOKENS,
    "pii": security.Redactor(pii=True).prefilter_tokens,
    "extra_keys": security.Redactor(extra_keys=("2fa", "x-pin", "db.pw")).prefilter_tokens,
    "anchors": TestWordAnchors.TOKENS,
}


def _reference(data: bytes, tokens: tuple[str, ...], *, key: bool) -> bool:
    """secret_corpus.reference_prefilter over any bytes (not only UTF-8), for a text or a key."""
    low = data.lower()  # ASCII letters only, as the rule says
    for token in tokens:
        # token_matches finds the bare token first; most are not there at all
        if _bare(token) in low and secret_corpus.token_matches(token, low, key=key):
            return True
    return secret_corpus.card_or_url_credentials(data)


def _bare(token: str) -> bytes:
    """The token's text without its anchors (as token_matches reads them)."""
    starts = token.startswith("^") and len(token) > 1
    ends = token.endswith("$") and len(token) > 1 + starts
    return token[1 if starts else 0 : len(token) - 1 if ends else len(token)].encode()


def _case_flips(token: bytes) -> list[bytes]:
    """The token in lower case, upper case, and with each letter's case flipped on its own."""
    out = {token, token.upper()}
    for i in range(len(token)):
        out.add(token[:i] + token[i : i + 1].swapcase() + token[i + 1 :])
    return sorted(out)


def _token_neighbourhood(tokens: tuple[str, ...]) -> list[bytes]:
    """Each token, its prefixes and near misses, in every case, alone and between the bytes that
    decide its anchors (a word byte, a key end, a digit, the end of the text)."""
    before = [b"", b"a", b"9", b"_", b"\xc3\xa9"]  # nothing, word bytes, others
    after = [b"", b"a", b"=", b"-", b" ", b"/"]  # the end, a word byte, key ends, others
    out: list[bytes] = []
    for token in tokens:
        bare = _bare(token)
        forms = _case_flips(bare) + [bare[:cut] for cut in range(1, len(bare))]
        forms.append(bare[:-1] + bytes([bare[-1] ^ 1]))  # the last byte wrong
        out += [b + form + a for form in forms for b in before for a in after]
    return out


class TestTableMatchesTheWrittenRule:
    """The C scan gives exactly the written rule's verdict (secret_corpus.reference_prefilter):
    for text and for keys, on every byte pair, every token's neighbourhood, the corpus and
    random bytes.  This is what holds the table's layout to the rule."""

    @pytest.fixture(scope="class", params=sorted(TOKEN_SETS))
    @classmethod
    def tables(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ring, tuple[str, ...]]]:
        tokens = TOKEN_SETS[request.param]
        with Ring(tmp_path_factory.mktemp("table") / "t.ring", 1 << 16) as r:
            r.set_prefilter(tokens)
            yield r, tokens

    @staticmethod
    def _check(table: tuple[Ring, tuple[str, ...]], samples: list[bytes], longest: int = 0) -> None:
        ring, tokens = table
        if longest:  # tokens longer than every sample cannot match: the reference skips them
            tokens = tuple(t for t in tokens if len(_bare(t)) <= longest)
        wrong = [
            (data, key)
            for data in samples
            for key in (False, True)
            if (ring.suspect_key(data) if key else ring.suspect(data)) != _reference(data, tokens, key=key)
        ]
        assert [] == wrong[:10]

    def test_every_one_and_two_byte_text(self, tables: tuple[Ring, tuple[str, ...]]) -> None:
        """All 256 one-byte and 65,536 two-byte strings."""
        samples = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(256) for b in range(256)]
        self._check(tables, samples, longest=2)

    def test_every_token_neighbourhood(self, tables: tuple[Ring, tuple[str, ...]]) -> None:
        """Each token and its prefixes, in each case, between the bytes its anchors look at."""
        self._check(tables, _token_neighbourhood(tables[1]))

    def test_every_token_at_every_offset(self, tables: tuple[Ring, tuple[str, ...]]) -> None:
        """Each token, in lower and upper case, at every offset of a longer text and with text
        or nothing after it: the scan skips clean bytes several pairs a step, so a match must
        be found wherever it falls in or across its steps, and at the text's end."""
        filler = b"quiet line, fine: all well here. " * 2
        samples = [
            filler[:offset] + form + filler[:after]
            for token in tables[1]
            for form in {_bare(token), _bare(token).upper()}
            for offset in range(35)
            for after in (0, 18)
        ]
        self._check(tables, samples)

    def test_the_corpus(self, tables: tuple[Ring, tuple[str, ...]]) -> None:
        """Every string of the secret corpus (secrets, near misses, personal data)."""
        samples: list[bytes] = []

        def add(value: object) -> None:
            if isinstance(value, str):
                samples.append(value.encode("utf-8", "surrogatepass"))
            elif isinstance(value, dict):
                for k, v in value.items():
                    add(k)
                    add(v)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    add(v)

        for case in [*secret_corpus.CASES, *secret_corpus.CLEAN, *secret_corpus.PII]:
            add(case.value)
            samples.append(str(case.value).encode("utf-8", "surrogatepass"))
        self._check(tables, samples)

    def test_random_bytes(self, tables: tuple[Ring, tuple[str, ...]]) -> None:
        """Seeded random strings over the bytes the rule treats specially, and over all bytes."""
        import random

        rng = random.Random(18)
        tokens = [t.lstrip("^").rstrip("$").encode() for t in tables[1]]
        pieces = [*tokens, *(t.upper() for t in tokens), b"0123456789", b" ", b"\t", b"-", b".",
                  b"/", b"@", b"\n", b"=", b":", b"_", b"a", b"Z", b"\xc5\xbf", b"\x00", b"4111 1111 1111 1111"]
        samples = []
        for _ in range(3000):
            samples.append(b"".join(rng.choice(pieces)[: rng.randint(1, 12)] for _ in range(rng.randint(0, 8))))
            samples.append(bytes(rng.randrange(256) for _ in range(rng.randint(0, 24))))
            samples.append(bytes(rng.choice(b"0123456789 -./@ \tsSpPaA_=:") for _ in range(rng.randint(0, 40))))
        self._check(tables, samples)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=texts)
    def test_hypothesis_texts(self, ring: Ring, text: str) -> None:
        """The default table on generated text, and on it as a field name (checked with ':' after)."""
        data = text.encode("utf-8", "surrogatepass")
        tokens = security.PREFILTER_TOKENS
        assert _reference(data, tokens, key=False) == ring.suspect(data)
        assert _reference(data, tokens, key=True) == ring.suspect_key(data)
        assert ring.suspect_key(data) == ring.suspect(data + b":")
        assert secret_corpus.reference_prefilter(text, tokens) == ring.suspect(data)


# --- verdicts kept per template and count of digits ------------------------------


def _emitter_by_shape(ring: Ring) -> Any:
    """As _emitter, keeping message verdicts by the shape of int arguments, as the logger does."""
    addr, push, suspect = ring.native()
    return _speedups.Emitter(
        addr, push, suspect, ring, True, 1, 10**6, 10**9, [],
        contextvars.ContextVar("test_context", default={}),
        lambda msg, args: msg % args, lambda: "t", threading.local(),
        **ring.native_prefilter(),
    )


@pytest.fixture(scope="module")
def big_ring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ring]:
    """The default table on a ring no test here fills."""
    with Ring(tmp_path_factory.mktemp("shape") / "shape.ring", 1 << 24) as r:
        r.set_prefilter(security.PREFILTER_TOKENS)
        yield r


def _handed_back(em: Any, template: str, args: tuple[object, ...]) -> bool:
    """Whether the C encoder handed the call back (the prefilter flagged it) rather than pushing it."""
    result = em.push(20, "svc", {}, template, args, {})
    assert result is None or result[0] is False
    return result is not None


class TestDigitReach:
    @pytest.mark.parametrize(
        ("tokens", "reach"),
        [
            (("token", "secret"), 0),
            (("doo_v1_", "pypi-ageichlwas5vcmc"), 1),
            (("ab12cd", "x9y"), 2),
            (("2fa",), 255),  # starts with a digit
            (("^sk-", "key9$"), 255),  # ends with one, once its anchor is set aside
        ],
    )
    def test_reach_of_a_table(self, tmp_path: Path, tokens: tuple[str, ...], reach: int) -> None:
        """The longest run of digits inside a token; 255 when a token starts or ends with one."""
        with Ring(tmp_path / "r.ring", 1 << 16) as r:
            assert 255 == r.prefilter_digit_reach()  # no prefilter: nothing may be assumed
            r.set_prefilter(tokens)
            assert reach == r.prefilter_digit_reach()

    def test_default_and_pii_tables(self, tmp_path: Path) -> None:
        """The default table holds "v1" and "s5" (reach 1); pii=True flags every digit (255)."""
        with Ring(tmp_path / "r.ring", 1 << 16) as r:
            r.set_prefilter(security.PREFILTER_TOKENS)
            assert 1 == r.prefilter_digit_reach()
            r.set_prefilter(security.Redactor(pii=True).prefilter_tokens)
            assert 255 == r.prefilter_digit_reach()


class TestVerdictsByShape:
    def test_a_counter_is_scanned_per_count_of_digits_and_stays_correct(self, tmp_path: Path) -> None:
        """A template whose verdict turns with the count of digits (a card-length run) is
        handed back exactly when its message is suspect, whichever shape came first."""
        with Ring(tmp_path / "s.ring", 1 << 22) as r:
            r.set_prefilter(security.PREFILTER_TOKENS)
            em = _emitter_by_shape(r)
            template = "order %s 1111 1111"  # 8 digits of its own: 5 more make a card-length run
            for n in [12, 1234, 98765, 4321, 55555, 10**6, -1234, -12345, 99, 12345]:
                message = template % n
                assert r.suspect(message.encode()) == _handed_back(em, template, (n,)), message

    def test_tokens_holding_digits(self, tmp_path: Path) -> None:
        """With a token "ab12cd" (reach 2) a two-digit int is scanned each call and found;
        longer ints cannot complete the token, whatever their digits."""
        with Ring(tmp_path / "s.ring", 1 << 22) as r:
            r.set_prefilter(("ab12cd", "token"))
            em = _emitter_by_shape(r)
            assert not _handed_back(em, "ab%scd", (34,))
            assert _handed_back(em, "ab%scd", (12,))
            assert not _handed_back(em, "ab%scd", (123,))
            assert not _handed_back(em, "ab%scd", (34,))
            assert _handed_back(em, "ab%scd", (12,))

    def test_a_new_table_forgets_the_verdicts(self, tmp_path: Path) -> None:
        """Verdicts belong to the rules of one Emitter setup: set up again, they are found anew."""
        with Ring(tmp_path / "s.ring", 1 << 22) as r:
            r.set_prefilter(("token",))
            em = _emitter_by_shape(r)
            assert not _handed_back(em, "call %s ok", (1234,))
            r.set_prefilter(("call",))
            addr, push, suspect = r.native()
            em.__init__(
                addr, push, suspect, r, True, 1, 10**6, 10**9, [],
                contextvars.ContextVar("test_context", default={}), lambda msg, args: msg % args,
                lambda: "t", threading.local(), **r.native_prefilter(),
            )
            assert _handed_back(em, "call %s ok", (1234,))

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        pieces=st.lists(st.sampled_from(FRAGMENTS + ["1", "00", " 1111 ", "v", "_", "doo_v", "s", "vcmc"]),
                        min_size=1, max_size=5),
        args=st.lists(
            st.one_of(st.integers(-10**18, 10**18), st.integers(-100, 10**5),
                      st.sampled_from(FRAGMENTS + ["k-abc", "sk", "1234", "u0000042"])),
            min_size=1, max_size=4,
        ),
    )
    def test_agrees_with_the_scan(self, big_ring: Ring, pieces: list[str], args: list[object]) -> None:
        """Whatever the template and its int or str arguments, a call is handed back exactly
        when the scan of its message flags it, calls of the same template before it notwithstanding."""
        template = pieces[0] + "".join("%s" + "".join(pieces[k + 1 : k + 2]) for k in range(len(args)))
        template += "".join(pieces[len(args) + 1 :])
        if not (template + "".join(map(str, args))).isascii():
            return  # not a plain call: the scan runs on the whole message
        em = _emitter_by_shape(big_ring)
        for call in [tuple(args), tuple(a // 7 if isinstance(a, int) else a[::-1] for a in args), tuple(args)]:
            message = template % call
            assert big_ring.suspect(message.encode()) == _handed_back(em, template, call), message


class TestSpans:
    def test_a_verdict_is_the_union_of_two_spans(self, tmp_path: Path) -> None:
        """For every cut u, what starts before u or from u on is what the whole scan finds
        (tokens across the cut, card runs, "/...@", anchors that read the byte before u)."""
        import random

        rng = random.Random(16)
        with Ring(tmp_path / "s.ring", 1 << 16) as r:
            for tokens in [security.PREFILTER_TOKENS, security.Redactor(pii=True).prefilter_tokens,
                           ("^sk-", "pin$", "^aws$", "token", "2fa")]:
                r.set_prefilter(tokens)
                words = [t.lstrip("^").rstrip("$").encode() for t in tokens]
                pieces = [*words, *(w.upper() for w in words), b"0123456789", b" ", b"\t", b"-", b".",
                          b"/", b"@", b"=", b":", b"_", b"a", b"\x00", b"4111 1111 1111 1111"]
                for _ in range(1500):
                    data = b"".join(rng.choice(pieces)[: rng.randint(1, 12)] for _ in range(rng.randint(0, 8)))
                    whole = r.suspect(data)
                    for u in range(len(data) + 1):
                        assert whole == (r.suspect_span(data, 0, u) or r.suspect_span(data, u, len(data))), (
                            data, u)

    def test_what_starts_before_the_span_is_not_its_own(self, tmp_path: Path) -> None:
        """A span reads on past its end and reads the byte before its start, but reports only
        what starts inside it; a span that is not one of the data vouches for nothing."""
        with Ring(tmp_path / "s.ring", 1 << 16) as r:
            r.set_prefilter(("^sk-", "token"))
            data = b"id token sk-1 xsk-2"
            assert r.suspect_span(data, 0, 4)  # "token" starts at 3, ends past 4
            assert not r.suspect_span(data, 4, 9)  # "oken sk" holds no start
            assert r.suspect_span(data, 9, 10)  # "^sk-" after a space
            assert not r.suspect_span(data, 15, 19)  # "sk-2" after "x": not a word start
            assert r.suspect_span(data, 5, 3)
            assert r.suspect_span(data, 0, len(data) + 1)

    def test_a_template_s_end_is_scanned_once_and_still_read(self, tmp_path: Path) -> None:
        """The text after a template's last argument is vouched for once from its second byte;
        its first byte, and tokens an argument starts, are read on every call."""
        with Ring(tmp_path / "s.ring", 1 << 22) as r:
            r.set_prefilter(("^sk-", "token"))
            em = _emitter_by_shape(r)
            assert not _handed_back(em, "id %ssk-abc done", ("x",))
            assert _handed_back(em, "id %ssk-abc done", ("_",))  # "^sk-" at the tail's first byte
            assert _handed_back(em, "id %sen done", ("tok",))  # a token an argument starts
            assert not _handed_back(em, "id %sen done", ("bok",))
            assert _handed_back(em, "id %s with token", ("x",))  # a tail that is suspect itself
            assert _handed_back(em, "id %s with token", ("y",))


# --- the screen before the scan, and a template's quiet head ------------------------

# Bytes that start nothing under the default table (no token starts with them; no digit,
# no "/"), the bytes a card run is made of, and a few that start something: the screen
# passes texts of the first two kinds alone, as long as their digits are too few for a card.
QUIET_BYTES = "uqyzUQYZ_=:,;!()[]{}#\n"
RUN_BYTES = "0123456789 \t-."
screened = st.text(alphabet=QUIET_BYTES + RUN_BYTES + "/@ps", max_size=40)


class TestScreen:
    """A span with no byte a match may start at, and too few digits for a card number, is
    passed without the scan: it must give the scan's verdict all the same."""

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=screened)
    def test_agrees_with_the_rule(self, ring: Ring, text: str) -> None:
        """Texts of quiet bytes, digits and separators (card runs of any length) give the rule's verdict."""
        data = text.encode()
        assert _reference(data, security.PREFILTER_TOKENS, key=False) == ring.suspect(data)
        assert _reference(data, security.PREFILTER_TOKENS, key=True) == ring.suspect_key(data)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(text=screened, cut=st.integers(0, 40))
    def test_a_card_run_across_the_span_s_end(self, ring: Ring, text: str, cut: int) -> None:
        """A run of digits that starts inside a span and ends past it counts all its digits."""
        data = text.encode()
        u = min(cut, len(data))
        assert ring.suspect(data) == (ring.suspect_span(data, 0, u) or ring.suspect_span(data, u, len(data)))

    @pytest.mark.parametrize("tokens", sorted(TOKEN_SETS))
    def test_the_scan_begins_where_the_screen_stopped(self, tmp_path: Path, tokens: str) -> None:
        """After quiet bytes, and after quiet bytes and digits, each token and each card run at
        every offset: the scan that takes over from the screen finds it, with each table."""
        table = TOKEN_SETS[tokens]
        with Ring(tmp_path / "s.ring", 1 << 16) as r:
            r.set_prefilter(table)
            finds = [_bare(t) for t in table] + [b"4111 1111 1111 1111", b"http://u:p@h", b"411111111111"]
            for lead in (b"uqzyuqzy" * 3, b"uq 12 zy-3.4 u" * 2):
                for offset in range(len(lead) + 1):
                    for find in finds:
                        for data in (lead[:offset] + find, lead[:offset] + find + b" ok", lead[:offset] + find.upper()):
                            assert _reference(data, table, key=False) == r.suspect(data), (data, offset)
                            assert _reference(data, table, key=True) == r.suspect_key(data), (data, offset)

    @pytest.mark.parametrize("tokens", sorted(TOKEN_SETS))
    def test_card_runs_at_every_length_and_cut(self, tmp_path: Path, tokens: str) -> None:
        """12 and 13 digits, in one piece or split by separators, around every cut of a span:
        with each table (pii=True makes every digit a token of its own)."""
        with Ring(tmp_path / "s.ring", 1 << 16) as r:
            r.set_prefilter(TOKEN_SETS[tokens])
            for digits in (12, 13):
                for run in ("4" * digits, "4111 1111 1111 1"[: digits + 3], "41-11." + "1" * (digits - 4)):
                    for text in (f"uu {run} qq", f"u{run}", f"{run}", f"qq {run[:5]}"):
                        data = text.encode()
                        whole = _reference(data, TOKEN_SETS[tokens], key=False)
                        assert whole == r.suspect(data), text
                        for u in range(len(data) + 1):
                            assert whole == (r.suspect_span(data, 0, u) or r.suspect_span(data, u, len(data))), (
                                text, u)


class TestQuietPrefix:
    """jr_quiet_prefix: what starts in a text's first bytes cannot depend on what follows them."""

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(head=texts, rest=texts)
    def test_what_follows_changes_nothing_before_it(self, ring: Ring, head: str, rest: str) -> None:
        """Whatever follows a head, the text's verdict is the scan's from the head's quiet prefix on."""
        h, data = head.encode("utf-8", "surrogatepass"), (head + rest).encode("utf-8", "surrogatepass")
        quiet = ring.quiet_prefix(h)
        assert 0 <= quiet <= max(len(h) - 1, 0)
        assert ring.suspect(data) == ring.suspect_span(data, quiet, len(data)), (h, quiet)

    @pytest.mark.parametrize("tokens", sorted(TOKEN_SETS))
    def test_a_token_the_rest_completes(self, tmp_path: Path, tokens: str) -> None:
        """Each token between text, cut at every byte: the head holding its start, or all of
        it and what its anchors read, is never quiet there, with each table (one- and two-byte
        tokens, digit tokens, anchors)."""
        with Ring(tmp_path / "q.ring", 1 << 16) as r:
            r.set_prefilter(TOKEN_SETS[tokens])
            for token in TOKEN_SETS[tokens]:
                for before in (b"", b"user ", b"x"):
                    for after in (b"", b"=1", b" done", b"x"):
                        data = before + _bare(token) + after
                        for cut in range(len(data) + 1):
                            quiet = r.quiet_prefix(data[:cut])
                            assert r.suspect(data) == r.suspect_span(data, quiet, len(data)), (data, cut, quiet)

    def test_a_head_is_measured_where_it_matters(self, ring: Ring) -> None:
        """The reference template's head "user " is quiet but for its last byte; a head that
        holds a digit, a "/" or a token's start is not quiet from there on; no table, no claim."""
        assert 4 == ring.quiet_prefix(b"user ")
        assert 2 == ring.quiet_prefix(b"id42 ")
        assert 3 == ring.quiet_prefix(b"url/")
        assert 0 == ring.quiet_prefix(b"token=")
        assert 0 == ring.quiet_prefix(b"")

    def test_no_table_no_claim(self, tmp_path: Path) -> None:
        """A ring with no prefilter vouches for no byte: rules set later would not be known."""
        with Ring(tmp_path / "q.ring", 1 << 16) as r:
            assert 0 == r.quiet_prefix(b"user ")


class TestStrArguments:
    """A plain call with str arguments is scanned from its template's quiet head: a match that
    starts in the head and ends in an argument, or that an argument starts, is still found."""

    @pytest.mark.parametrize(
        ("template", "arg", "suspect"),
        [
            ("user %s logged in", "u0000123", False),
            ("user %s logged in", "secret", True),
            ("tok%s ok", "en", True),  # "token" begun by the head
            ("tok%s ok", "yo", False),
            ("card 4111 1111 %s ok", "1111 1", True),  # a card run the head begins
            ("card 4111 1111 %s ok", "11", False),
            ("url http://u:p%s/x", "@host", True),  # "/" in the head, "@" in the argument
            ("url http://u%s", " @host", False),  # white space before the "@"
            ("key x%s", "sk-1", False),  # "^sk-" after a letter of the head
            ("key %s", "sk-1", True),
            ("user %s logged in", "4111111111111", True),
            ("user %s in %s", "u1", False),
        ],
    )
    def test_matches_across_the_head(self, big_ring: Ring, template: str, arg: str, suspect: bool) -> None:
        """Each case is handed back exactly when the scan of its whole message flags it."""
        em = _emitter_by_shape(big_ring)
        call = (arg,) * template.count("%s")
        message = template % call
        assert suspect == big_ring.suspect(message.encode()), message
        for _ in range(2):  # the template's head and tail are measured at the first call
            assert suspect == _handed_back(em, template, call), message

    @settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        head=st.text(alphabet=QUIET_BYTES + RUN_BYTES + "/@skpto", max_size=12),
        arg=st.text(alphabet=QUIET_BYTES + RUN_BYTES + "/@skentpo", max_size=16),
        rest=st.text(alphabet=QUIET_BYTES + RUN_BYTES + "/@kens", max_size=12),
    )
    def test_agrees_with_the_scan(self, big_ring: Ring, head: str, arg: str, rest: str) -> None:
        """Heads, ids and tails of quiet bytes, card-run bytes and token pieces: the call is
        handed back exactly when its message is suspect."""
        template = head.replace("%", "") + "%s" + rest.replace("%", "")
        em = _emitter_by_shape(big_ring)
        message = template % (arg,)
        assert big_ring.suspect(message.encode()) == _handed_back(em, template, (arg,)), message
