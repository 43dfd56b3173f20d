"""Redaction against realistic secrets, realistic non-secrets, and property-based tests.

The property tests check what the logger relies on: sanitize and redaction never
raise and are idempotent, and text the prefilter passes needs no redaction.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import secret_corpus
from secret_corpus import reference_prefilter as _reference_prefilter
from janus_utils.security import (
    DEFAULT_REDACTOR,
    PREFILTER_TOKENS,
    Redactor,
    might_contain_secret,
    redact_text,
    redact_value,
    sanitize,
)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
RSA_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEpAIBAAKCAQEA0Z3VS5JJcds3xfn/ygWyF8PbnGy0AHB7MhgHcTz6sE2I2yPB\n"
    "aFDrBz9vFqU4yWV7hJ3RvWL2LqKZb0k3cJY2Xgm8b5XwFSm0r4rQ5x1Yf7ZkQe9H\n"
    "-----END RSA PRIVATE KEY-----"
)
OPENSSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


class Case(NamedTuple):
    text: str
    secrets: tuple[str, ...]  # none of these may be left
    marker: str  # this must appear
    kept: tuple[str, ...]  # and these must stay


SECRETS: list[Case] = [
    Case(*entry)
    for entry in [
        # key=value and key: value
        (
            "login failed for user=bob password=hunter2 from 10.0.0.1",
            ("hunter2",),
            "[REDACTED:password]",
            ("login failed for user=bob password=", " from 10.0.0.1"),
        ),
        (
            "retrying with passwd=Tr0ub4dor!3 after timeout",
            ("Tr0ub4dor!3",),
            "[REDACTED:passwd]",
            ("after timeout",),
        ),
        (
            "DATABASE_PASSWORD=Pr0dPa55 DEBUG=false",
            ("Pr0dPa55",),
            "[REDACTED:password]",
            ("DEBUG=false",),
        ),
        (
            "  client_secret: 8Q~xyzAbc123.def",
            ("8Q~xyzAbc123.def",),
            "[REDACTED:client_secret]",
            ("  client_secret: ",),
        ),
        (
            "X-Api-Key: 9f8e7d6c5b4a39281706f5e4d3c2b1a0",
            ("9f8e7d6c5b4a39281706f5e4d3c2b1a0",),
            "[REDACTED:api_key]",
            ("X-Api-Key: ",),
        ),
        (
            "exec --password=cl1-pass --verbose",
            ("cl1-pass",),
            "[REDACTED:password]",
            ("exec --password=", " --verbose"),
        ),
        (
            "refresh_token=1//0gLq2ZrE-Vb8T done",
            ("1//0gLq2ZrE-Vb8T",),
            "[REDACTED:refresh_token]",
            (" done",),
        ),
        (
            "session: 7f9c2ba4e88f827d616045507605853e",
            ("7f9c2ba4e88f827d616045507605853e",),
            "[REDACTED:session]",
            ("session: ",),
        ),
        (
            "webhook secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La",
            ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La",),
            "[REDACTED:secret]",
            ("webhook secret=",),
        ),
        ("patient ssn=078-05-1120 admitted", ("078-05-1120",), "[REDACTED:ssn]", (" admitted",)),
        ("cvv: 737, exp 03/30", ("737",), "[REDACTED:cvv]", (", exp 03/30",)),
        (
            'passphrase="open sesame" loaded',
            ("open sesame", "sesame"),
            "[REDACTED:passphrase]",
            ('passphrase="', '" loaded'),
        ),
        (
            "dbPassword => 'm!xed Case'",
            ("m!xed Case",),
            "[REDACTED:password]",
            ("dbPassword => '",),
        ),
        # JSON, Python reprs and escaped JSON
        (
            '{"username": "alice", "password": "c0rrect \\"horse\\"", "remember": true}',
            ("c0rrect", "horse"),
            "[REDACTED:password]",
            ('{"username": "alice", "password": "', '", "remember": true}'),
        ),
        (
            "{'user': 'carol', 'api_key': 'sk_live_51HxYzAbCdEf'}",
            ("sk_live_51HxYzAbCdEf",),
            "[REDACTED:api_key]",
            ("{'user': 'carol', 'api_key': '", "'}"),
        ),
        (
            '{"pin_token": 918273, "ok": 1}',
            ("918273",),
            "[REDACTED:token]",
            ('{"pin_token": ', ', "ok": 1}'),
        ),
        (
            "Config(host='db', password='rep-r3pr')",
            ("rep-r3pr",),
            "[REDACTED:password]",
            ("Config(host='db', password='", "')"),
        ),
        (
            '{"body": "{\\"password\\": \\"nested-s3cret\\"}"}',
            ("nested-s3cret",),
            "[REDACTED:password]",
            ('{"body": "{\\"password\\": \\"',),
        ),
        (
            '{"headers": {"Authorization": "Bearer abc.def-ghi_123"}}',
            ("abc.def-ghi_123",),
            "[REDACTED:authorization]",
            ('{"headers": {"Authorization": "',),
        ),
        # Authorization headers and bare tokens
        (
            "Authorization: Bearer " + JWT,
            (JWT, JWT.split(".")[2]),
            "[REDACTED:jwt]",
            ("Authorization: Bearer ",),
        ),
        (
            "Authorization: Bearer 2YotnFZFEjr1zCsicMWpAA",
            ("2YotnFZFEjr1zCsicMWpAA",),
            "[REDACTED:bearer]",
            ("Authorization: Bearer ",),
        ),
        (
            "curl -H 'Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==' https://api",
            ("QWxhZGRpbjpvcGVuIHNlc2FtZQ==",),
            "[REDACTED:basic]",
            (" https://api",),
        ),
        (
            "Proxy-Authorization: Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            ("YWxhZGRpbjpvcGVuc2VzYW1l",),
            "[REDACTED:basic]",
            ("Proxy-Authorization: Basic ",),
        ),
        (
            "Authorization: Token 9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",
            ("9944b09199c62bcf9418ad846dd0e4bbdfc6ee4b",),
            "[REDACTED:authorization]",
            ("Authorization: Token ",),
        ),
        (
            "id token issued: " + JWT + " (expires 3600s)",
            (JWT,),
            "[REDACTED:jwt]",
            ("id token issued: ", " (expires 3600s)"),
        ),
        (
            "using AKIAIOSFODNN7EXAMPLE for s3 upload",
            ("AKIAIOSFODNN7EXAMPLE",),
            "[REDACTED:aws_key]",
            ("using ", " for s3 upload"),
        ),
        (
            "temporary creds ASIAY34FZKBOKMUTVV7A expire soon",
            ("ASIAY34FZKBOKMUTVV7A",),
            "[REDACTED:aws_key]",
            ("temporary creds ", " expire soon"),
        ),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",),
            "[REDACTED:secret_access_key]",
            ("aws_secret_access_key = ",),
        ),
        (
            "export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            ("wJalrXUtnFEMI",),
            "[REDACTED:secret_access_key]",
            ("export AWS_SECRET_ACCESS_KEY=",),
        ),
        (
            "cloning with ghp_16C7e42F292c6912E7710c838347Ae178B4a ok",
            ("ghp_16C7e42F292c6912E7710c838347Ae178B4a",),
            "[REDACTED:github_token]",
            ("cloning with ", " ok"),
        ),
        (
            "pushed using github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP",
            ("github_pat_11ABCDEFG",),
            "[REDACTED:github_token]",
            ("pushed using ",),
        ),
        (
            "oauth gho_16C7e42F292c6912E7710c838347Ae178B4a granted",
            ("gho_16C7e42F292c6912E7710c838347Ae178B4a",),
            "[REDACTED:github_token]",
            (" granted",),
        ),
        (
            "slack bot xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy posted",
            ("pdFZKVeTuE8sk7oOcBrzbqgy",),
            "[REDACTED:slack_token]",
            ("slack bot ", " posted"),
        ),
        (
            "user token xoxp-1234567890-1234567890-1234567890-abcdef0123456789abcdef0123456789",
            ("abcdef0123456789abcdef",),
            "[REDACTED:slack_token]",
            ("user token ",),
        ),
        # private keys
        (
            "loaded key\n" + RSA_KEY + "\nfrom vault",
            ("MIIEpAIBAAKCAQEA0Z3VS5JJ", "aFDrBz9vFqU4"),
            "[REDACTED:private_key]",
            ("loaded key\n", "\nfrom vault"),
        ),
        (
            "deploy key: " + OPENSSH_KEY,
            ("b3BlbnNzaC1rZXkt",),
            "[REDACTED:private_key]",
            ("deploy key: ",),
        ),
        (
            '{"key": "-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5\\n-----END EC PRIVATE KEY-----\\n"}',
            ("MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5",),
            "[REDACTED:private_key]",
            ('{"key": "', '\\n"}'),
        ),
        # URLs and connection strings
        (
            "connecting to postgres://app:S3cure!Pass@db.internal:5432/prod",
            ("S3cure!Pass",),
            "[REDACTED:url_password]",
            ("postgres://app:", "@db.internal:5432/prod"),
        ),
        (
            "mysql://root:toor@127.0.0.1:3306/shop?charset=utf8",
            ("toor",),
            "[REDACTED:url_password]",
            ("mysql://root:", "@127.0.0.1:3306/shop?charset=utf8"),
        ),
        (
            "mongodb+srv://admin:m0ng0P%40ss@cluster0.abcde.mongodb.net/test?retryWrites=true",
            ("m0ng0P%40ss",),
            "[REDACTED:url_password]",
            ("mongodb+srv://admin:", "@cluster0.abcde.mongodb.net/test"),
        ),
        (
            "cache at redis://:r3d1sPass@cache:6379/0",
            ("r3d1sPass",),
            "[REDACTED:url_password]",
            ("redis://:", "@cache:6379/0"),
        ),
        (
            "broker amqp://guest:gu3st-pw@rabbit/vhost",
            ("gu3st-pw",),
            "[REDACTED:url_password]",
            ("amqp://guest:", "@rabbit/vhost"),
        ),
        (
            "GET https://user:p@ss@w0rd@example.com/path",
            ("p@ss@w0rd", "ss@w0rd"),
            "[REDACTED:url_password]",
            ("https://user:", "@example.com/path"),
        ),
        (
            "git clone https://x-access-token:ghs_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r.git",
            ("ghs_16C7",),
            "[REDACTED:",
            ("https://x-access-token:", "@github.com/o/r.git"),
        ),
        (
            "Driver={ODBC Driver 18 for SQL Server};Server=tcp:db,1433;Uid=sa;Pwd=Str0ng!Pass;Encrypt=yes",
            ("Str0ng!Pass",),
            "[REDACTED:pwd]",
            (
                "Driver={ODBC Driver 18 for SQL Server};Server=tcp:db,1433;Uid=sa;Pwd=",
                ";Encrypt=yes",
            ),
        ),
        (
            "Server=myServer;Database=myDb;User Id=myUser;Password=myP4ssword;",
            ("myP4ssword",),
            "[REDACTED:password]",
            ("Server=myServer;Database=myDb;User Id=myUser;Password=", ";"),
        ),
        (
            "Uid=sa;PWD={Str;0ng};Database=x",
            ("Str;0ng", "0ng"),
            "[REDACTED:pwd]",
            ("Uid=sa;PWD={", "};Database=x"),
        ),
        (
            "host=db port=5432 dbname=app user=app password=pg-s3cret sslmode=require",
            ("pg-s3cret",),
            "[REDACTED:password]",
            ("host=db port=5432 dbname=app user=app password=", " sslmode=require"),
        ),
        (
            "jdbc:postgresql://db:5432/app?user=app&password=jdbcS3cret&ssl=true",
            ("jdbcS3cret",),
            "[REDACTED:password]",
            ("jdbc:postgresql://db:5432/app?user=app&password=", "&ssl=true"),
        ),
        (
            "jdbc:sqlserver://db;user=sa;password=Mss9l!pw;encrypt=true",
            ("Mss9l!pw",),
            "[REDACTED:password]",
            (";encrypt=true",),
        ),
        ("dsn=postgresql://u:dsnP4ss@h/db", ("dsnP4ss",), "[REDACTED:", ("dsn=",)),
        (
            "GET /callback?code=abc&access_token=ya29.a0AfH6SMBx&state=xyz",
            ("ya29.a0AfH6SMBx",),
            "[REDACTED:access_token]",
            ("GET /callback?code=abc&access_token=", "&state=xyz"),
        ),
        (
            "s3 url ?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240101&X-Amz-Signature=3b1f5c2e9d8a7f6e0a1b",
            ("3b1f5c2e9d8a7f6e0a1b", "AKIAIOSFODNN7EXAMPLE"),
            "[REDACTED:signature]",
            ("s3 url ?X-Amz-Credential=",),
        ),
        # cookies
        (
            "Cookie: sessionid=38afes7a8; theme=dark",
            ("38afes7a8",),
            "[REDACTED:cookie]",
            ("Cookie: ", "; theme=dark"),
        ),
        (
            "Set-Cookie: session_id=a3fWa; Path=/; HttpOnly",
            ("a3fWa",),
            "[REDACTED:set_cookie]",
            ("Set-Cookie: ", "; Path=/; HttpOnly"),
        ),
        # card numbers (Luhn-valid test numbers)
        (
            "paid with 4111 1111 1111 1111 today",
            ("4111 1111 1111 1111", "1111 1111"),
            "[REDACTED:card]",
            ("paid with ", " today"),
        ),
        (
            "card=4111111111111111,exp=12/29",
            ("4111111111111111",),
            "[REDACTED:card]",
            ("card=", ",exp=12/29"),
        ),
        (
            "mc 5500-0000-0000-0004 declined",
            ("5500-0000-0000-0004",),
            "[REDACTED:card]",
            ("mc ", " declined"),
        ),
        ("amex 378282246310005.", ("378282246310005",), "[REDACTED:card]", ("amex ", ".")),
        ("discover:6011111111111117", ("6011111111111117",), "[REDACTED:card]", ("discover:",)),
        (
            "jcb 3530 1113 3330 0000 ok",
            ("3530 1113 3330 0000",),
            "[REDACTED:card]",
            ("jcb ", " ok"),
        ),
        ("visa13 4222222222222 ok", ("4222222222222",), "[REDACTED:card]", ("visa13 ", " ok")),
        (
            "card 4111 1111 1111 1111 12/29 cvc 123",
            ("4111 1111 1111 1111", "1111 1111 1111"),
            "[REDACTED:card]",
            ("card ", " 12/29 cvc 123"),
        ),
        (
            "charge 6011111111111117 123 approved",
            ("6011111111111117",),
            "[REDACTED:card]",
            ("charge ", " approved"),
        ),
        (
            '{"pan": "5555555555554444"}',
            ("5555555555554444",),
            "[REDACTED:card]",
            ('{"pan": "', '"}'),
        ),
        (
            "credit card_number=4000056655665556",
            ("4000056655665556",),
            "[REDACTED:",
            ("credit card_number=",),
        ),
    ]
]

CASE_IDS = [f"{index:02d}-{case.marker[10:-1] or 'any'}" for index, case in enumerate(SECRETS)]

# Text that must come through byte for byte.
CLEAN: list[str] = [
    "request 550e8400-e29b-41d4-a716-446655440000 completed in 12ms",
    "deployed commit 9fceb02d0ae598e95dc970b74767f19372d61af8 to prod",
    "sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "2024-03-15T10:22:33.123456+00:00 worker started",
    "event at 1710498153123 ms, next at 1710498154123",
    "order #4111111111111112 shipped",  # Luhn-invalid
    "invoice 5500-0000-0000-0005 rejected",  # Luhn-invalid
    "ref 4000 1234 5678 9011 pending",  # Luhn-invalid
    "ISBN 978-3-16-148410-0",
    "IBAN DE89 3704 0044 0532 0130 00",
    "phone +1 (555) 010-9999",
    "temperature 0.30000000000000004 and ratio 0.5444444444444444",
    "tracking 1Z999AA10123456784",
    "The passage about tokenizers and tokenization was long.",
    "Password reset email sent to alice@example.com",
    "session started for user 42; sessions active: 12",
    "token_count=512 max_tokens=4096 tokenizer: bert",
    "https://example.com/api/v1/users?page=2&sort=name",
    "contact alice@example.com, bob.smith+tag@sub.example.org",
    "ssh://git@github.com:org/repo.git",
    "http://localhost:8080/users/bob@example.com",
    "Basic setup complete",
    "the bearer of bad news",
    "keyboard monkey donkey",
    "Asia/Tokyo timezone; ASIAN markets",
    "the secret garden is a book",
    "signature verified for release 1.4.2",
    "auth: ok, user_id=42, request_id=abc-123",
    "public_key=ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZ\n-----END CERTIFICATE-----",
    "session_timeout=30m cookie_domain=.example.com password_hint=pet",
    '{"level": "info", "msg": "cache warm", "hits": 1024, "dsn_host": "db1"}',
    "xoxo from the team",
    "user-agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
    "git describe v1.2.3-14-g2414721",
    "Processed 1,234,567 rows in 3.2s",
    "ghost_mode=on ghp_short",
    "the DSN was parsed and the cookie jar emptied",
    "journée terminée — 日本語 — emoji 🎉",
]


def reference_prefilter(text: str, tokens: tuple[str, ...] = PREFILTER_TOKENS) -> bool:
    """The prefilter rule written out over UTF-8 bytes, as the C port does it."""
    return _reference_prefilter(text, tokens)


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if index % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


class TestSecretCorpus:
    def test_corpus_is_large_enough(self) -> None:
        """The corpus holds at least 40 secret-bearing strings."""
        assert len(SECRETS) >= 40

    @pytest.mark.parametrize("case", SECRETS, ids=CASE_IDS)
    def test_redacted(self, case: Case) -> None:
        """The secret is gone, a marker says what was there, the surrounding text stays."""
        out = redact_text(case.text)
        assert [] == [secret for secret in case.secrets if secret in out]
        assert case.marker in out
        assert [] == [context for context in case.kept if context not in out]

    @pytest.mark.parametrize("case", SECRETS, ids=CASE_IDS)
    def test_prefilter_catches_it(self, case: Case) -> None:
        """Every secret-bearing string is sent to full redaction."""
        assert might_contain_secret(case.text)

    @pytest.mark.parametrize("case", SECRETS, ids=CASE_IDS)
    def test_idempotent(self, case: Case) -> None:
        """Redacting the redacted text changes nothing."""
        once = redact_text(case.text)
        assert once == redact_text(once)

    @pytest.mark.parametrize("case", SECRETS, ids=CASE_IDS)
    def test_inside_nested_fields(self, case: Case) -> None:
        """The same strings inside nested fields are redacted too."""
        fields = {"request": {"lines": [case.text, (case.text,)], "meta": {"note": case.text}}}
        out = repr(redact_value(fields))
        assert [] == [secret for secret in case.secrets if secret in out]
        assert case.marker in out

    def test_test_cards_are_luhn_valid(self) -> None:
        """The card numbers in the corpus are Luhn-valid, so the card rule is what is tested."""
        for number in [
            "4111111111111111",
            "5500000000000004",
            "378282246310005",
            "6011111111111117",
            "3530111333300000",
            "4222222222222",
            "5555555555554444",
            "4000056655665556",
        ]:
            assert luhn_valid(number)


class TestCleanCorpus:
    @pytest.mark.parametrize("text", CLEAN)
    def test_unchanged(self, text: str) -> None:
        """Identifiers, hashes, numbers, prose and plain URLs come through unchanged."""
        assert text == redact_text(text)
        assert text == DEFAULT_REDACTOR._redact_unfiltered(text)

    def test_invalid_cards_really_are_invalid(self) -> None:
        """The card-like numbers in the clean corpus fail the Luhn check."""
        for number in ["4111111111111112", "5500000000000005", "4000123456789011"]:
            assert not luhn_valid(number)

    def test_some_clean_text_skips_the_slow_path(self) -> None:
        """Ordinary log lines are cleared by the prefilter alone."""
        assert not might_contain_secret("GET /health 200 in 3ms")
        assert not might_contain_secret("deployed commit 9fceb02d0ae598e95dc970b74767f19372d61af8")

    def test_fields_unchanged(self) -> None:
        """Clean strings in fields come back equal."""
        fields = {"lines": list(CLEAN), "n": 1, "nested": {"ok": True}}
        assert fields == redact_value(fields)


# -- property-based ------------------------------------------------------------

SETTINGS = settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Pieces that make up secrets, near-misses and their surroundings.  Mixed with
# random text they put pattern edges (separators, quotes, case, look-alike
# Unicode letters, partial triggers) next to each other.
# One short text per family of the shared corpus, so that the new patterns'
# edges (anchors, separators, contexts) are mixed and mutated too.
_SHARED_SHORT = list(
    {
        case.family: case.value
        for case in secret_corpus.CASES
        if isinstance(case.value, str) and len(case.value) <= 120
    }.values()
)

FRAGMENTS = sorted(
    {piece for case in SECRETS for piece in (case.text, *case.secrets, *case.text.split())}
    | {piece for text in _SHARED_SHORT for piece in (text, *text.split())}
    | set(CLEAN)
    | {
        "password",
        "Password",
        "pass",
        "word",
        "to",
        "ken",
        "Token",
        "api",
        "Key",
        "key",
        "session",
        "Id",
        "Set-",
        "cookie",
        "=",
        ": ",
        ":",
        "=>",
        '"',
        "'",
        '\\"',
        " ",
        "\t",
        "\n",
        ";",
        "&",
        ",",
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        ".",
        "-",
        "_",
        "/",
        "@",
        "://",
        "https",
        "Bearer ",
        "bearer\t",
        "Basic ",
        "dXNlcjpwYXNz",
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9",
        "eyJzdWIiOjF9",
        "AKIA",
        "ASIA",
        "IOSFODNN7EXAMPLE",
        "ghp_",
        "github_pat_",
        "xoxb-",
        "123-",
        "-----BEGIN RSA PRIVATE KEY-----",
        "-----END RSA PRIVATE KEY-----",
        "4111",
        "1111",
        "5500",
        "0000",
        "0004",
        "4",
        "1",
        "0.",
        "[REDACTED:jwt]",
        "[REDACTED:password]",
        "[REDACTED:",
        "pin",
        "Pass",
        "auth",
        "sid",
        "sk-",
        "SG.",
        "aws ",
        "sig=",
        "--pin ",
        "('",
        "', '",
        "..",
        "mailgun ",
        "Digest ",
        "response=",
        "Cookie: a=1; ",
        "scott/tiger@orcl",
        "@v4",
        "\u212a",
        "\u017f",
        "\u0130",
        "\u00a0",
        "\u2028",
        "\x1b[31m",
        "é",
        "null",
        "true",
    }
)

mixed_text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.sampled_from(FRAGMENTS),
        st.text(max_size=8),
        st.text(alphabet=string.ascii_letters + string.digits + " -_=:@/.", max_size=12),
    ),
    max_size=10,
).map("".join)

json_like = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.binary(max_size=8),
        mixed_text,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(
            st.one_of(
                st.sampled_from(["password", "user", "apiKey", "token_count", "Set-Cookie", "id"]),
                mixed_text,
                st.integers(),
            ),
            children,
            max_size=4,
        ),
        st.frozensets(st.one_of(mixed_text, st.integers()), max_size=3),
    ),
    max_leaves=20,
)


MARKER = re.compile(r"\[REDACTED:[a-z0-9_]+\]")


def is_escape_free(text: str) -> bool:
    bad = {"Cc", "Cs", "Zl", "Zp"}
    return not any(unicodedata.category(ch) in bad for ch in text)


class TestProperties:
    @SETTINGS
    @given(st.one_of(st.text(), mixed_text))
    def test_sanitize_total_idempotent_one_line(self, text: str) -> None:
        """sanitize never raises, is idempotent, and leaves no control character or line break."""
        out = sanitize(text)
        assert out == sanitize(out)
        assert is_escape_free(out)
        assert len(out.splitlines()) <= 1

    @SETTINGS
    @given(mixed_text)
    def test_redact_text_idempotent(self, text: str) -> None:
        """redact_text never raises and redacting twice equals redacting once."""
        once = redact_text(text)
        assert once == redact_text(once)

    @SETTINGS
    @given(mixed_text)
    def test_prefilter_guarantee(self, text: str) -> None:
        """When the prefilter says no secret, full redaction would not change the text."""
        if not might_contain_secret(text):
            assert text == DEFAULT_REDACTOR._redact_unfiltered(text)

    @SETTINGS
    @given(st.one_of(mixed_text, st.text()))
    def test_prefilter_matches_the_written_rule(self, text: str) -> None:
        """might_contain_secret agrees with the rule applied to UTF-8 bytes (the C port's view)."""
        assert reference_prefilter(text) == might_contain_secret(text)

    @SETTINGS
    @given(mixed_text)
    def test_markers_survive_sanitize(self, text: str) -> None:
        """Redacting then sanitising, as the logger does for a terminal, keeps every marker."""
        redacted = redact_text(text)
        shown = sanitize(redacted)
        assert MARKER.findall(redacted) == MARKER.findall(shown)
        assert is_escape_free(shown)

    @SETTINGS
    @given(json_like)
    def test_redact_value_total_idempotent_pure(self, value: Any) -> None:
        """redact_value never raises, is idempotent and does not change its input."""
        before = repr(value)
        once = redact_value(value)
        assert before == repr(value)
        assert once == redact_value(once)

    @SETTINGS
    @given(
        st.lists(
            st.sampled_from(["pin_code", "x-ticket", "Otp", "badge.id", "api_secret_v2_key"]),
            min_size=1,
            max_size=3,
        ),
        mixed_text,
    )
    def test_guarantee_for_configured_keys(self, extra: list[str], text: str) -> None:
        """The guarantee holds for a redactor with extra keys too."""
        redactor = Redactor(extra_keys=extra)
        if not redactor.might_contain_secret(text):
            assert text == redactor._redact_unfiltered(text)


def _mutations(text: str) -> list[str]:
    # Every single-character deletion, and substitutions by characters that
    # break or imitate a trigger: case, look-alike Unicode, other separators.
    subs = ("", "X", " ", "\t", "-", "_", ".", "\u212a", "\u017f", "\u00a0", "0")
    out = []
    for index in range(len(text)):
        for sub in subs:
            out.append(text[:index] + sub + text[index + 1 :])
        out.append(text[:index] + text[index].swapcase() + text[index + 1 :])
    return out


class TestGuaranteeOnMutatedSecrets:
    @pytest.mark.parametrize(
        "text", [case.text for case in SECRETS if len(case.text) <= 120] + _SHARED_SHORT
    )
    def test_mutations(self, text: str) -> None:
        """Near-miss variants of every short corpus secret still obey the prefilter guarantee."""
        broken = [
            variant
            for variant in _mutations(text)
            if not might_contain_secret(variant)
            and DEFAULT_REDACTOR._redact_unfiltered(variant) != variant
        ]
        assert [] == broken


# -- the shared corpus (tests/secret_corpus.py), unit by unit ---------------------

TEXT_FORMS = ("message", "argument", "field", "nested", "exception", "traceback", "stdlib")
TEXT_CASES = [case for case in secret_corpus.CASES if case.form in TEXT_FORMS]
VALUE_CASES = [case for case in secret_corpus.CASES if case.form not in TEXT_FORMS]

# Every family issue 18 names, plus the ones redaction always had.
FAMILIES = {
    "stripe", "openai", "anthropic", "google", "sendgrid", "npm", "huggingface", "gitlab",
    "digitalocean", "shopify", "pypi", "mailgun", "slack_webhook", "aws_secret", "card", "azure",
    "oracle", "cookie", "header_tuples", "argv", "docker_auth", "digest", "key_names", "classic",
}  # fmt: skip


def _leaks(case: secret_corpus.Case, out: str) -> list[str]:
    return [needle for needle in case.secrets if needle in out]


class TestSharedCorpus:
    def test_corpus_covers_every_family(self) -> None:
        """Well past the 140 cases of the report, every family it names, and near misses."""
        assert len(secret_corpus.CASES) + len(secret_corpus.CLEAN) > 200
        assert len(secret_corpus.CASES) > 140
        assert FAMILIES == {case.family for case in secret_corpus.CASES}
        assert len(secret_corpus.CLEAN) >= 40

    def test_card_numbers_are_luhn_valid(self) -> None:
        """The int card numbers really are card numbers, so the card rule is what is tested."""
        for case in secret_corpus.CASES:
            if case.form in ("int_field", "nested_int"):
                assert secret_corpus.luhn_valid(str(case.value)), case.id

    @pytest.mark.parametrize("case", TEXT_CASES, ids=lambda c: c.id)
    def test_text_is_redacted(self, case: secret_corpus.Case) -> None:
        """No part of the secret is left, the prefilter (both written and coded) sends it on, and
        redacting again changes nothing."""
        out = redact_text(case.value)
        assert [] == _leaks(case, out)
        assert "[REDACTED:" in out
        assert might_contain_secret(case.value)
        assert reference_prefilter(case.value)
        assert out == redact_text(out)

    @pytest.mark.parametrize("case", VALUE_CASES, ids=lambda c: c.id)
    def test_values_are_redacted(self, case: secret_corpus.Case) -> None:
        """Int fields, header pairs, argv lists and dict fields come back without the secret."""
        out = redact_value(case.value)
        assert [] == _leaks(case, repr(out))
        assert out == redact_value(out)

    @pytest.mark.parametrize("clean", secret_corpus.CLEAN, ids=lambda c: c.id)
    def test_near_misses_are_unchanged(self, clean: secret_corpus.Clean) -> None:
        """Words holding a key word, SHAs, UUIDs, refs, numbers that are no card: untouched."""
        if isinstance(clean.value, str):
            assert clean.value == redact_text(clean.value)
            assert clean.value == DEFAULT_REDACTOR._redact_unfiltered(clean.value)
        else:
            assert clean.value == redact_value(clean.value)

    @pytest.mark.parametrize("case", secret_corpus.PII, ids=lambda c: c.id)
    def test_personal_data_only_when_asked(self, case: secret_corpus.Case) -> None:
        """E-mail addresses, IBANs and SSNs stay by default and go with pii=True."""
        value = case.value
        redact = Redactor(pii=True).redact_value
        assert value == redact_value(value)
        assert [] == _leaks(case, repr(redact(value)))
        if isinstance(value, str):
            assert Redactor(pii=True).might_contain_secret(value)


class TestNewRules:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("auth: ok, retries: 2", "auth: ok, retries: 2"),
            ("proxy auth=abcdef123456", "proxy auth=[REDACTED:auth]"),
            ("lint pass: true", "lint pass: true"),
            ("ftp pass=hunter22", "ftp pass=[REDACTED:pass]"),
            ("pin=1234 otp: 987654 pw=x1", "pin=[REDACTED:pin] otp: [REDACTED:otp] pw=[REDACTED:pw]"),
            ("Cookie: theme=dark; lang=en", "Cookie: [REDACTED:cookie]; lang=en"),
            (
                "Cookie: theme=dark; JSESSIONID=0123456789ABCDEF; remember=a8Fk29dkLq01Zp",
                "Cookie: [REDACTED:cookie]; JSESSIONID=[REDACTED:jsessionid]; remember=[REDACTED:cookie]",
            ),
            ("run --password s3cr3t --verbose", "run --password [REDACTED:password] --verbose"),
            ("[('X-Api-Key', 'k1k2k3'), ('Accept', 'json')]", "[('X-Api-Key', '[REDACTED:api_key]'), ('Accept', 'json')]"),
            ("sqlplus scott/tiger@orcl", "sqlplus scott/[REDACTED:password]@orcl"),
            ("uses: actions/checkout@main", "uses: actions/checkout@main"),
            ("api_key=sk_live_" + "a1" * 12, "api_key=[REDACTED:api_key]"),
            ("key sk_live_" + "a1" * 12, "key [REDACTED:stripe_key]"),
            ("card 4111  1111  1111  1111 ok", "card [REDACTED:card] ok"),
            ("card 4111.1111.1111.1111 ok", "card [REDACTED:card] ok"),
            ("ratio 0.5444444444444444", "ratio 0.5444444444444444"),
        ],
    )
    def test_text(self, text: str, expected: str) -> None:
        """The rules issue 18 asked for, each with the marker it leaves."""
        assert expected == redact_text(text)

    def test_status_keys_are_not_sensitive_keys(self) -> None:
        """auth and pass hold secrets unless a status: is_sensitive_key says no, secret_kind decides."""
        assert not DEFAULT_REDACTOR.is_sensitive_key("auth")
        assert "auth" == DEFAULT_REDACTOR.secret_kind("basic_auth", "bob:pw")
        assert DEFAULT_REDACTOR.secret_kind("auth", "ok") is None
        assert DEFAULT_REDACTOR.secret_kind("auth", True) is None
        assert {"auth": "ok", "pass": "[REDACTED:pass]"} == redact_value({"auth": "ok", "pass": "x9"})

    def test_positional_secrets(self) -> None:
        """Pairs and argv options in lists; a pattern's own marker is kept where it found one."""
        value = {
            "headers": [("Authorization", "Bearer x"), ("Authorization", "Bearer " + "a1" * 12)],
            "argv": ["app", "--db-password", "pw1", "-v", "plain"],
            "pair": ["token", 42],
            "not_pairs": ["password", "email", "name"],
        }
        assert {
            "headers": [("Authorization", "[REDACTED:authorization]"), ("Authorization", "Bearer [REDACTED:bearer]")],
            "argv": ["app", "--db-password", "[REDACTED:password]", "-v", "plain"],
            "pair": ["token", "[REDACTED:token]"],
            "not_pairs": ["password", "email", "name"],
        } == redact_value(value)

    def test_card_ints(self) -> None:
        """An int that is a card number is redacted as a value and as a key; other ints stay."""
        assert {"a": "[REDACTED:card]", "b": 4111111111111112, "[REDACTED:card]": 1, "c": True} == redact_value(
            {"a": 4111111111111111, "b": 4111111111111112, 5555555555554444: 1, "c": True}
        )
        assert Redactor(patterns=False).redact_value(4111111111111111) == 4111111111111111
