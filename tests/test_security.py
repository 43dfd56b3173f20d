"""Tests for janus_utils.security: validation, sanitising, file names, keys, hashing, tokens."""

from __future__ import annotations

import re
import unicodedata
import uuid

import pytest
from secret_corpus import token_matches

from janus_utils import security
from janus_utils.error_handling.api.errors import ValidationError
from janus_utils.error_handling.utils.errors import ConfigError
from janus_utils.security import (
    DEFAULT_REDACTOR,
    PREFILTER_TOKENS,
    Redactor,
    constant_time_equals,
    hash_identifier,
    hash_key_from_env,
    is_sensitive_key,
    random_hex,
    random_token,
    redact_text,
    redact_value,
    safe_filename,
    sanitize,
    validate_choice,
    validate_email,
    validate_identifier,
    validate_int,
    validate_payload,
    validate_string,
    validate_uuid,
)


def rejected(call, *args, **kwargs) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        call(*args, **kwargs)
    return info.value


class TestModule:
    def test_all_is_sorted_and_resolves(self) -> None:
        """__all__ is alphabetised and every name in it exists."""
        assert sorted(security.__all__) == security.__all__
        for name in security.__all__:
            assert hasattr(security, name)

    def test_first_docstring_line_says_what_it_is_for(self) -> None:
        """The module docstring opens with its purpose."""
        assert "secrets" in security.__doc__.splitlines()[0]

    def test_validation_error_shape(self) -> None:
        """ValidationError carries code, HTTP 422, field, reason and a per-field list."""
        error = rejected(validate_int, "x", field="age")
        assert "validation_error" == error.code
        assert 422 == error.http_status
        assert "age" == error.field
        assert [{"field": "age", "reason": error.reason}] == error.errors
        assert str(error).startswith("[validation_error] age: ")


class TestValidateIdentifier:
    @pytest.mark.parametrize("value", ["a", "user_42", "my-service.v2", "9lives", "A" * 64])
    def test_valid(self, value: str) -> None:
        """Letters, digits, '_', '-' and '.' starting with a letter or digit pass unchanged."""
        assert value == validate_identifier(value)

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("", "must not be empty"),
            ("_hidden", "must start with an ASCII letter or digit"),
            (".env", "must start with an ASCII letter or digit"),
            ("héllo", "may only hold ASCII letters"),
            ("a b", "may only hold ASCII letters"),
            ("a/b", "may only hold ASCII letters"),
            ("name\n", "may only hold ASCII letters"),
            ("x" * 65, "at most 64 characters"),
            (42, "must be a string"),
        ],
    )
    def test_invalid(self, value: object, reason: str) -> None:
        """Anything else is refused with the field named and the reason given."""
        error = rejected(validate_identifier, value, field="service")
        assert "service" == error.field
        assert reason in error.reason

    def test_max_length_is_configurable(self) -> None:
        """max_length bounds the identifier."""
        assert "abc" == validate_identifier("abc", max_length=3)
        assert "at most 2" in rejected(validate_identifier, "abc", max_length=2).reason


class TestValidateEmail:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("alice@example.com", "alice@example.com"),
            ("  Bob.Smith+tag@Sub.Example.ORG ", "Bob.Smith+tag@sub.example.org"),
            ("o'neil@xn--bcher-kva.de", "o'neil@xn--bcher-kva.de"),
        ],
    )
    def test_valid(self, value: str, expected: str) -> None:
        """A plain address passes; white space is stripped and the domain lowercased."""
        assert expected == validate_email(value)

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            ("", "must not be empty"),
            ("alice", "exactly one '@'"),
            ("a@b@example.com", "exactly one '@'"),
            ("@example.com", "before '@'"),
            ("a..b@example.com", "before '@'"),
            ("a b@example.com", "before '@'"),
            ("alice@localhost", "invalid domain"),
            ("alice@-bad.com", "invalid domain"),
            ("alice@example.123", "invalid domain"),
            ("alice@bücher.de", "invalid domain"),
            ("x" * 65 + "@example.com", "before '@'"),
            (None, "must be a string"),
        ],
    )
    def test_invalid(self, value: object, reason: str) -> None:
        """A malformed address is refused, naming the part that is wrong."""
        error = rejected(validate_email, value, field="contact")
        assert "contact" == error.field
        assert reason in error.reason


class TestValidateUuid:
    CANONICAL = "123e4567-e89b-12d3-a456-426614174000"

    @pytest.mark.parametrize(
        "value",
        [
            "123e4567-e89b-12d3-a456-426614174000",
            "123E4567-E89B-12D3-A456-426614174000",
            "123e4567e89b12d3a456426614174000",
            "{123e4567-e89b-12d3-a456-426614174000}",
            "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
            uuid.UUID("123e4567-e89b-12d3-a456-426614174000"),
        ],
    )
    def test_valid_spellings_return_canonical(self, value: object) -> None:
        """Every common spelling comes back as lowercase 8-4-4-4-12."""
        assert self.CANONICAL == validate_uuid(value)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "not-a-uuid",
            "123e4567-e89b12d3-a456-426614174000",
            "{123e4567-e89b-12d3-a456-426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
            "123e4567_e89b_12d3_a456_426614174000",
            12345,
        ],
    )
    def test_invalid(self, value: object) -> None:
        """Anything that is not a UUID, or mixes spellings, is refused."""
        error = rejected(validate_uuid, value, field="order_id")
        assert "order_id" == error.field
        assert "UUID" in error.reason

    def test_version(self) -> None:
        """version= insists on that UUID version."""
        v4 = str(uuid.uuid4())
        assert v4 == validate_uuid(v4, version=4)
        assert "version 4" in rejected(validate_uuid, self.CANONICAL, version=4).reason


class TestValidateString:
    def test_valid(self) -> None:
        """A string within the bounds comes back unchanged."""
        assert "hello\tworld\n" == validate_string("hello\tworld\n", field="note")

    def test_strip(self) -> None:
        """strip=True checks and returns the stripped text."""
        assert "hi" == validate_string("  hi  ", field="note", strip=True, min_length=1)
        error = rejected(validate_string, "   ", field="note", strip=True, min_length=1)
        assert "must not be empty" == error.reason

    @pytest.mark.parametrize(
        ("value", "kwargs", "reason"),
        [
            ("ab", {"min_length": 3}, "at least 3 characters, got 2"),
            ("abcd", {"max_length": 3}, "at most 3 characters, got 4"),
            ("a\x00b", {}, "control characters"),
            ("a\x1b[31m", {}, "control characters"),
            ("abc", {"pattern": r"[0-9]+"}, "must match the pattern"),
            ("12a", {"pattern": re.compile(r"[0-9]+")}, "must match the pattern"),
            (b"bytes", {}, "must be a string, got bytes"),
        ],
    )
    def test_invalid(self, value: object, kwargs: dict, reason: str) -> None:
        """Length, control characters, pattern and type are checked."""
        error = rejected(validate_string, value, field="name", **kwargs)
        assert "name" == error.field
        assert reason in error.reason

    def test_pattern_must_match_in_full(self) -> None:
        """The pattern must cover the whole string, not a prefix."""
        assert "123" == validate_string("123", pattern=r"[0-9]+")
        rejected(validate_string, "123x", pattern=r"[0-9]+")

    def test_bad_bounds_are_a_programming_error(self) -> None:
        """min_length above max_length is a ValueError, not a validation failure."""
        with pytest.raises(ValueError):
            validate_string("x", min_length=5, max_length=2)


class TestValidateInt:
    @pytest.mark.parametrize(("value", "expected"), [(5, 5), ("42", 42), (" -7 ", -7), ("+3", 3)])
    def test_valid(self, value: object, expected: int) -> None:
        """ints and decimal strings give an int."""
        assert expected == validate_int(value, field="n")

    @pytest.mark.parametrize(
        ("value", "reason"),
        [
            (True, "not true/false"),
            (False, "not true/false"),
            (3.0, "not a decimal"),
            ("3.5", "written with digits"),
            ("1e3", "written with digits"),
            ("", "written with digits"),
            ("٣", "written with digits"),
            (None, "got NoneType"),
        ],
    )
    def test_invalid(self, value: object, reason: str) -> None:
        """bool, float and anything not a decimal integer are refused."""
        error = rejected(validate_int, value, field="count")
        assert "count" == error.field
        assert reason in error.reason

    def test_bounds(self) -> None:
        """min and max are inclusive and named in the reason."""
        assert 1 == validate_int(1, min=1, max=10)
        assert 10 == validate_int(10, min=1, max=10)
        assert "at least 1, got 0" in rejected(validate_int, 0, min=1).reason
        assert "at most 10, got 11" in rejected(validate_int, 11, max=10).reason


class TestValidateChoice:
    def test_valid_returns_the_choice(self) -> None:
        """A value among the choices is returned."""
        assert "asc" == validate_choice("asc", ("asc", "desc"), field="order")
        assert 2 == validate_choice(2, {1, 2, 3})

    def test_invalid_lists_the_choices(self) -> None:
        """A value outside the choices is refused and the choices are listed."""
        error = rejected(validate_choice, "up", ["asc", "desc"], field="order")
        assert "order" == error.field
        assert "must be one of: 'asc', 'desc'" == error.reason

    def test_bool_does_not_stand_in_for_int(self) -> None:
        """True is not accepted for the choice 1, nor 1 for True."""
        rejected(validate_choice, True, [1, 2])
        rejected(validate_choice, 1, [True, False])

    def test_odd_equality_is_not_a_match(self) -> None:
        """A choice whose __eq__ raises is skipped, not propagated."""

        class Weird:
            def __eq__(self, other: object) -> bool:
                raise RuntimeError("no")

            __hash__ = None  # type: ignore[assignment]

        assert "b" == validate_choice("b", [Weird(), "b"])

    def test_many_choices_are_summarised(self) -> None:
        """A long choice list is cut in the message."""
        error = rejected(validate_choice, -1, range(100))
        assert "(100 in all)" in error.reason


class TestValidatePayload:
    def test_valid_payload_is_returned_as_is(self) -> None:
        """A JSON-like payload passes and is the same object."""
        payload = {"a": [1, 2.5, True, None, "x", {"b": []}], "c": {}}
        assert payload is validate_payload(payload)

    @pytest.mark.parametrize(
        ("payload", "path", "reason"),
        [
            ({"a": (1, 2)}, "payload.a", "has a tuple"),
            ({"a": {1: "x"}}, "payload.a", "keys must be strings"),
            ({"a": [0, float("nan")]}, "payload.a[1]", "finite"),
            ({"a": [0, 1, b"raw"]}, "payload.a[2]", "has a bytes"),
            ({"a b": {"c": object()}}, "payload['a b'].c", "has a object"),
        ],
    )
    def test_invalid_values_are_located(self, payload: object, path: str, reason: str) -> None:
        """The error's field is the path to the first bad value."""
        error = rejected(validate_payload, payload)
        assert path == error.field
        assert reason in error.reason

    def test_depth_bound(self) -> None:
        """Nesting deeper than max_depth is refused."""
        deep: list = []
        node = deep
        for _ in range(5):
            node.append([])
            node = node[0]
        assert deep is validate_payload(deep, max_depth=6)
        assert "more than 5 levels" in rejected(validate_payload, deep, max_depth=5).reason

    def test_cycle_is_refused(self) -> None:
        """A payload that contains itself is refused, not looped over."""
        loop: dict = {}
        loop["self"] = loop
        assert "refers to itself" in rejected(validate_payload, loop).reason

    def test_item_bound(self) -> None:
        """More values in all than max_items is refused."""
        assert (
            "more than 10 values"
            in rejected(
                validate_payload, {"a": list(range(6)), "b": list(range(6))}, max_items=10
            ).reason
        )

    def test_string_bound(self) -> None:
        """Strings and keys longer than max_string are refused."""
        assert (
            "more than the 4 allowed" in rejected(validate_payload, ["abcde"], max_string=4).reason
        )
        assert "key longer than 4" in rejected(validate_payload, {"abcde": 1}, max_string=4).reason


class TestSanitize:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a\nb", "a\\nb"),
            ("a\r\nb", "a\\r\\nb"),
            ("a\tb", "a\\tb"),
            ("nul\x00", "nul\\x00"),
            ("bell\x07", "bell\\x07"),
            ("vt\x0bff\x0c", "vt\\x0bff\\x0c"),
            ("fs\x1cgs\x1drs\x1e", "fs\\x1cgs\\x1drs\\x1e"),
            ("del\x7f", "del\\x7f"),
            ("nel\x85", "nel\\x85"),
            ("csi\x9b31m", "csi\\x9b31m"),
            ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
            ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
            ("line\u2028para\u2029", "line\\u2028para\\u2029"),
            ("abc\u202edcba", "abc\\u202edcba"),
            ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
            ("lone\ud800", "lone\\ud800"),
        ],
    )
    def test_escapes(self, text: str, expected: str) -> None:
        """Each class of control, separator and escape character becomes a visible escape."""
        assert expected == sanitize(text)

    @pytest.mark.parametrize(
        "text",
        [
            "plain ASCII",
            "héllo wörld",
            "日本語のログ",
            "emoji 🎉👍",
            "a\\nb is literal",
            "מה שלום",
            "",
        ],
    )
    def test_ordinary_text_unchanged(self, text: str) -> None:
        """Text with no control characters is returned unchanged, backslashes included."""
        assert text == sanitize(text)

    def test_idempotent(self) -> None:
        """Sanitising twice is the same as once."""
        text = "a\nb\\n\x1b[2J\u2028\\x1b"
        assert sanitize(text) == sanitize(sanitize(text))

    def test_output_is_one_line_without_controls(self) -> None:
        """No control character and no line break survives."""
        every = "".join(chr(code) for code in range(0x00, 0xA0)) + "\u2028\u2029\x85"
        out = sanitize(every)
        assert 1 == len(out.splitlines())
        assert [] == [ch for ch in out if unicodedata.category(ch) == "Cc"]

    def test_non_str_is_converted(self) -> None:
        """A non-str argument is turned into text first."""
        assert "42" == sanitize(42)  # type: ignore[arg-type]


class TestSafeFilename:
    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "etc_passwd"),
            ("..\\..\\windows\\system32", "windows_system32"),
            ("/abs/path.txt", "abs_path.txt"),
            (".bashrc", "bashrc"),
            ("...hidden", "hidden"),
            ("-rf", "rf"),
            ("bad\x00na\nme.txt", "badname.txt"),
            ("evil\u202etxt.exe", "eviltxt.exe"),
            ('a<b>c:d"e|f?g*h', "a_b_c_d_e_f_g_h"),
            ("con", "_con"),
            ("CON.txt", "_CON.txt"),
            ("lpt1.log", "_lpt1.log"),
            ("console.log", "console.log"),
            ("name. . ", "name"),
            ("ｆｕｌｌ／ｗｉｄｔｈ", "full_width"),
            ("résumé.doc", "résumé.doc"),
        ],
    )
    def test_cleaning(self, name: str, expected: str) -> None:
        """Separators, dot parts, controls, reserved names and leading dots are dealt with."""
        assert expected == safe_filename(name)

    @pytest.mark.parametrize("name", ["", ".", "..", "../..", "///", "\x00\x01", " . "])
    def test_nothing_left_is_an_error(self, name: str) -> None:
        """A name with nothing usable raises instead of returning an empty name."""
        error = rejected(safe_filename, name, field="upload")
        assert "upload" == error.field
        assert "no usable characters" in error.reason

    def test_truncated_to_bytes_keeping_extension(self) -> None:
        """Long names are cut to max_length UTF-8 bytes, the extension kept."""
        out = safe_filename("é" * 300 + ".tar", max_length=255)
        assert out.endswith(".tar")
        assert len(out.encode("utf-8")) <= 255
        assert out[:-4] == "é" * len(out[:-4])

    def test_truncation_without_extension(self) -> None:
        """A long name without extension is simply cut."""
        assert "a" * 10 == safe_filename("a" * 50, max_length=10)

    def test_non_str_is_rejected(self) -> None:
        """Only text can be a file name."""
        assert "must be a string" in rejected(safe_filename, b"x").reason


class TestSensitiveKeys:
    @pytest.mark.parametrize(
        ("key", "expected"),
        [
            ("password", "password"),
            ("PASSWORD", "password"),
            ("db_password", "password"),
            ("DB-Password", "password"),
            ("dbPassword", "password"),
            ("user.password", "password"),
            ("passwd", "passwd"),
            ("pwd", "pwd"),
            ("x-api-key", "api_key"),
            ("X_API_KEY", "api_key"),
            ("apiKey", "api_key"),
            ("apikey", "apikey"),
            ("github_token", "token"),
            ("csrf_token", "token"),
            ("accessToken", "access_token"),
            ("refresh-token", "refresh_token"),
            ("Authorization", "authorization"),
            ("Proxy-Authorization", "authorization"),
            ("set-cookie", "set_cookie"),
            ("Cookie", "cookie"),
            ("sessionId", "session_id"),
            ("SESSIONID", "sessionid"),
            ("client_secret", "client_secret"),
            ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
            ("private key", "private_key"),
            ("passPhrase", "passphrase"),
            ("X-Amz-Signature", "signature"),
            ("card_number", "card_number"),
            ("userSSN", "ssn"),
            ("connectionString", "connection_string"),
            ("DSN", "dsn"),
            ("credentials", "credentials"),
        ],
    )
    def test_sensitive(self, key: str, expected: str) -> None:
        """Key words and keys ending in _<word>, in any spelling, are sensitive."""
        assert expected == DEFAULT_REDACTOR.key_class(key)
        assert is_sensitive_key(key)

    @pytest.mark.parametrize(
        "key",
        [
            "token_count",
            "max_tokens",
            "tokenizer",
            "monkey",
            "keyboard",
            "key",
            "password_hint",
            "secretary",
            "session_timeout",
            "cookie_domain",
            "public_key",
            "username",
            "user_id",
            "auth",
            "to\u212aen",  # KELVIN SIGN: the rule folds ASCII letters only
            "",
            42,
            None,
            ("password",),
        ],
    )
    def test_not_sensitive(self, key: object) -> None:
        """Other keys, and keys that merely contain a word, are not sensitive."""
        assert not is_sensitive_key(key)

    def test_bytes_and_str_subclass_keys(self) -> None:
        """bytes keys are decoded and str subclasses read as plain str."""

        class Key(str):
            def lower(self) -> str:  # type: ignore[override]
                raise RuntimeError("not called")

        assert is_sensitive_key(b"password")
        assert is_sensitive_key(Key("db_password"))

    def test_results_are_cached(self) -> None:
        """After the first lookup the answer comes from the cache dict."""
        redactor = Redactor()
        assert redactor.is_sensitive_key("My-Token")
        assert "token" == redactor._key_cache["My-Token"]


class TestRedactorConfig:
    def test_default_tokens_are_the_module_constant(self) -> None:
        """PREFILTER_TOKENS is the default redactor's token list."""
        assert DEFAULT_REDACTOR.prefilter_tokens == PREFILTER_TOKENS

    def test_tokens_suit_the_c_prefilter(self) -> None:
        """Tokens are lowercase ASCII, 2+ characters, at most 256 and 4096 bytes in all."""
        assert all(token.isascii() and token == token.lower() for token in PREFILTER_TOKENS)
        assert all(len(token) >= 2 for token in PREFILTER_TOKENS)
        assert len(PREFILTER_TOKENS) <= 256
        assert len("\0".join(PREFILTER_TOKENS).encode()) <= 4096

    def test_no_token_contains_another(self) -> None:
        """The list is minimal: a token containing another could never be the only match."""
        for token in PREFILTER_TOKENS:
            assert [token] == [other for other in PREFILTER_TOKENS if other in token]

    def test_pattern_triggers_present(self) -> None:
        """Every value pattern's trigger and the base key words are tokens."""
        for token in ["bearer", "basic ", "eyj", "akia", "asia", "ghp_", "github_pat_", "xox"]:
            assert token in PREFILTER_TOKENS
        for token in ["-----begin", "password", "secret", "token", "cookie", "session"]:
            assert token in PREFILTER_TOKENS

    def test_every_spelling_of_every_key_word_holds_a_token(self) -> None:
        """A key word written with _, -, ., space or camelCase always contains a token."""
        for word in DEFAULT_REDACTOR.keys | DEFAULT_REDACTOR.status_keys:
            parts = word.split("_")
            spellings = {sep.join(parts) for sep in ("_", "-", ".", " ", "")}
            spellings.add(parts[0] + "".join(part.capitalize() for part in parts[1:]))
            for spelling in spellings:
                low = spelling.lower()
                # As a key the spelling ends a dict key, or ":", "=" or a quote follows it.
                for text, key in ((low, True), (f"{low}=", False), (f'"{low}"', False)):
                    assert any(
                        token_matches(token, text.encode(), key=key) for token in PREFILTER_TOKENS
                    ), spelling

    def test_extra_keys_extend_tokens_and_redaction(self) -> None:
        """Configured extra keys are redacted and their words join the prefilter."""
        redactor = Redactor(extra_keys=["Pin-Code", "otp"])
        assert "otp" in redactor.prefilter_tokens
        assert any("pin" in token for token in redactor.prefilter_tokens)
        assert "pinCode=[REDACTED:pin_code] otp: [REDACTED:otp]" == redactor.redact_text(
            "pinCode=1234 otp: 987654"
        )
        assert {"user_pin_code": "[REDACTED:pin_code]"} == redactor.redact_value(
            {"user_pin_code": 1234}
        )

    def test_custom_key_set_replaces_default(self) -> None:
        """keys= replaces the default words."""
        redactor = Redactor(keys=["ticket"])
        assert "password=x ticket=[REDACTED:ticket]" == redactor.redact_text(
            "password=x ticket=abc"
        )

    def test_patterns_off(self) -> None:
        """patterns=False redacts by key only and drops the pattern tokens."""
        redactor = Redactor(patterns=False)
        assert "eyj" not in redactor.prefilter_tokens
        text = "AKIAIOSFODNN7EXAMPLE password=x"
        assert "AKIAIOSFODNN7EXAMPLE password=[REDACTED:password]" == redactor.redact_text(text)

    @pytest.mark.parametrize("keys", ["password", [""], ["x"], ["naïve"], [3], ["redacted"]])
    def test_bad_keys_are_config_errors(self, keys: object) -> None:
        """Unusable key words are refused with a ConfigError saying what to use."""
        with pytest.raises(ConfigError):
            Redactor(extra_keys=keys)  # type: ignore[arg-type]


class TestRedactValue:
    def test_nested_fields(self) -> None:
        """Values under sensitive keys go whatever their type; strings elsewhere are scanned."""
        fields = {
            "user": "bob",
            "db": {"host": "db1", "password": 12345, "dsn": None},
            "headers": [("Authorization", "Bearer abcdef0123456789"), {"X-Api-Key": ["k"]}],
            "note": "retry with token=abc123",
            "count": 3,
        }
        expected = {
            "user": "bob",
            "db": {"host": "db1", "password": "[REDACTED:password]", "dsn": "[REDACTED:dsn]"},
            "headers": [
                ("Authorization", "Bearer [REDACTED:bearer]"),
                {"X-Api-Key": "[REDACTED:api_key]"},
            ],
            "note": "retry with token=[REDACTED:token]",
            "count": 3,
        }
        assert expected == redact_value(fields)

    def test_input_not_mutated(self) -> None:
        """The input is left as it was; new containers come back."""
        fields = {"password": "x", "list": ["token=abc123"]}
        out = redact_value(fields)
        assert {"password": "x", "list": ["token=abc123"]} == fields
        assert out["list"] is not fields["list"]

    def test_sets_and_tuples_keep_their_kind(self) -> None:
        """Tuples, sets and frozensets come back as the same kind."""
        out = redact_value({"t": ("a",), "s": {"b"}, "f": frozenset({"c"})})
        assert {"t": ("a",), "s": {"b"}, "f": frozenset({"c"})} == out

    def test_str_keys_are_scanned(self) -> None:
        """A secret used as a dict key is redacted too."""
        assert {"Bearer [REDACTED:bearer]": 1} == redact_value({"Bearer abcdef0123456789": 1})

    def test_cycle(self) -> None:
        """A container that contains itself is cut with "[cycle]"."""
        loop: list = ["a"]
        loop.append(loop)
        assert ["a", "[cycle]"] == redact_value(loop)

    def test_shared_reference_is_not_a_cycle(self) -> None:
        """The same list twice side by side is copied twice, not called a cycle."""
        shared = ["token=abc123"]
        assert [["token=[REDACTED:token]"]] * 2 == redact_value([shared, shared])

    def test_depth_limit(self) -> None:
        """Nesting past 32 levels is replaced by "[depth limit]" and never recurses further."""
        deep: list = []
        node = deep
        for _ in range(10_000):
            node.append([])
            node = node[0]
        out = redact_value(deep)
        for _ in range(32):
            out = out[0]
        assert "[depth limit]" == out

    def test_hostile_objects_are_left_alone(self) -> None:
        """Objects whose __eq__, __hash__, __str__ and __repr__ raise pass through untouched."""

        class Hostile:
            def __eq__(self, other: object) -> bool:
                raise RuntimeError("eq")

            def __hash__(self) -> int:
                return 1

            def __str__(self) -> str:
                raise RuntimeError("str")

            __repr__ = __str__

        thing = Hostile()
        out = redact_value({"a": thing, thing: "token=abc123"})
        assert thing is out["a"]
        assert ["token=[REDACTED:token]"] == [value for key, value in out.items() if key is thing]

    def test_failing_container_becomes_unredactable(self) -> None:
        """A container that raises while being read is replaced, never leaked, never raised."""

        class Broken(list):
            def __iter__(self):  # type: ignore[override]
                raise RuntimeError("boom")

        assert {"x": "[unredactable]"} == redact_value({"x": Broken(["password=a"])})

    def test_key_hash_failure_is_contained(self) -> None:
        """A key whose hash fails on re-insertion does not make redact_value raise."""

        class Flaky:
            calls = 0

            def __hash__(self) -> int:
                Flaky.calls += 1
                if Flaky.calls > 1:
                    raise RuntimeError("hash")
                return 7

        assert "[unredactable]" == redact_value({Flaky(): 1})

    def test_str_subclass(self) -> None:
        """A str subclass with a broken __str__ is read as its plain text."""

        class Text(str):
            def __str__(self) -> str:
                raise RuntimeError("str")

        assert "token=[REDACTED:token]" == redact_value(Text("token=abc123"))

    def test_scalars_pass_through(self) -> None:
        """Numbers, None, bytes and other objects are returned as they are."""
        marker = object()
        for value in (1, 2.5, None, True, b"password=x", marker):
            assert value is redact_value(value)


class TestRedactText:
    def test_clean_text_is_the_same_object(self) -> None:
        """Text the prefilter passes is returned without copying."""
        text = "GET /health 200 in 3ms"
        assert text is redact_text(text)

    def test_rejects_non_str(self) -> None:
        """redact_text wants text; redact_value is for anything else."""
        with pytest.raises(TypeError):
            redact_text(b"password=x")  # type: ignore[arg-type]

    def test_marker_after_marker_is_stable(self) -> None:
        """Markers do not match any pattern, so already-redacted text is unchanged."""
        text = "password=[REDACTED:password] Authorization: Bearer [REDACTED:jwt] [REDACTED:card]"
        assert text == redact_text(text)

    def test_pair_inside_a_non_secret_value(self) -> None:
        """A pair inside another pair's value is still found."""
        assert "note: password=[REDACTED:password]" == redact_text("note: password=abc")

    def test_url_user_named_like_a_key_keeps_host(self) -> None:
        """A URL user called "token" is a user, not a key: the host stays."""
        assert "https://token:[REDACTED:url_password]@example.com/x" == redact_text(
            "https://token:s3cr3t@example.com/x"
        )

    def test_unterminated_private_key_goes_to_the_end(self) -> None:
        """A PEM block cut off before END is removed to the end of the text."""
        text = "key: -----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
        assert "key: [REDACTED:private_key]" == redact_text(text)

    def test_unterminated_quoted_value(self) -> None:
        """A quoted value without its closing quote is removed to the end of the line."""
        assert 'password="[REDACTED:password]\nnext' == redact_text('password="abc def\nnext')

    def test_prose_bearer_and_basic_kept(self) -> None:
        """Scheme words in prose are not mistaken for credentials."""
        text = "the bearer token and Basic authentication are explained below"
        assert text == redact_text(text)

    def test_empty_values_kept(self) -> None:
        """An empty value has nothing to hide and stays."""
        text = 'password=&user=bob "token": "" secret=;'
        assert text == redact_text(text)


class TestHashing:
    def test_stable(self) -> None:
        """The same value and key always give the same pseudonym."""
        assert hash_identifier("user-42", b"k" * 32) == hash_identifier("user-42", b"k" * 32)

    def test_known_value(self) -> None:
        """It is HMAC-SHA256 in hex, cut to length."""
        import hashlib
        import hmac

        expected = hmac.new(b"key", b"alice", hashlib.sha256).hexdigest()[:16]
        assert expected == hash_identifier("alice", "key")

    def test_keyed(self) -> None:
        """A different key gives a different pseudonym."""
        assert hash_identifier("user-42", "key-one") != hash_identifier("user-42", "key-two")

    def test_values_differ(self) -> None:
        """Different values give different pseudonyms."""
        assert hash_identifier("user-42", "k") != hash_identifier("user-43", "k")

    @pytest.mark.parametrize("length", [8, 16, 33, 64])
    def test_length(self, length: int) -> None:
        """length hex characters come back."""
        out = hash_identifier("x", "k", length=length)
        assert length == len(out)
        assert re.fullmatch(r"[0-9a-f]+", out)

    def test_value_types(self) -> None:
        """str hashes as UTF-8, bytes as they are, other values via str()."""
        assert hash_identifier("42", "k") == hash_identifier(b"42", "k")
        assert hash_identifier("42", "k") == hash_identifier(42, "k")

    @pytest.mark.parametrize("length", [7, 65, 0, -1, True, 16.0])
    def test_bad_length(self, length: object) -> None:
        """A length outside 8..64 is a ConfigError."""
        with pytest.raises(ConfigError, match="from 8 to 64"):
            hash_identifier("x", "k", length=length)  # type: ignore[arg-type]

    @pytest.mark.parametrize("key", ["", b"", None, 123])
    def test_bad_key(self, key: object) -> None:
        """An empty or missing key is a ConfigError that says how to provide one."""
        with pytest.raises(ConfigError, match="hash key"):
            hash_identifier("x", key)  # type: ignore[arg-type]

    def test_key_from_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """JANUS_LOG_HASH_KEY is read as UTF-8 bytes; unset or empty gives None."""
        monkeypatch.setenv("JANUS_LOG_HASH_KEY", "s3cret-ké")
        assert "s3cret-ké".encode() == hash_key_from_env()
        monkeypatch.setenv("JANUS_LOG_HASH_KEY", "")
        assert None is hash_key_from_env()
        monkeypatch.delenv("JANUS_LOG_HASH_KEY")
        assert None is hash_key_from_env()
        assert b"x" == hash_key_from_env({"JANUS_LOG_HASH_KEY": "x"})


class TestTokens:
    @pytest.mark.parametrize(
        ("a", "b", "expected"),
        [
            ("abc", "abc", True),
            ("abc", "abd", False),
            (b"abc", "abc", True),
            ("ké", "ké", True),
            ("ké", "ke", False),
            ("", "", True),
            ("abc", None, False),
            (1, 1, False),
        ],
    )
    def test_constant_time_equals(self, a: object, b: object, expected: bool) -> None:
        """Equality of str and bytes, UTF-8 for str; other types are never equal."""
        assert expected == constant_time_equals(a, b)  # type: ignore[arg-type]

    def test_random_token(self) -> None:
        """Tokens are URL-safe, of the expected length and unique."""
        tokens = {random_token() for _ in range(200)}
        assert 200 == len(tokens)
        assert all(re.fullmatch(r"[A-Za-z0-9_\-]{43}", token) for token in tokens)
        assert 22 == len(random_token(16))

    def test_random_hex(self) -> None:
        """random_hex gives 2 hex characters per byte, unique."""
        values = {random_hex() for _ in range(200)}
        assert 200 == len(values)
        assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in values)

    @pytest.mark.parametrize("nbytes", [0, 8, 15, True])
    def test_too_few_bytes(self, nbytes: int) -> None:
        """Fewer than 16 random bytes is refused."""
        with pytest.raises(ValueError, match="at least 16"):
            random_token(nbytes)
