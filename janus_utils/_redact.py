"""The redaction engine: secrets found by key and by shape, replaced by ``[REDACTED:<kind>]``.

Standard library only and importing nothing else of janus_utils, so that
everything that redacts can stand on it: :mod:`janus_utils.security` re-exports
its public names (and documents the prefilter contract they follow), and
:mod:`janus_utils.error_handling` redacts what its errors show and log with it.

Its one error, :class:`RedactorConfigError`, is a ``ValueError``: this module
sits below the error hierarchy, whose errors redact themselves with it.  The
public class, :class:`janus_utils.security.Redactor`, names ``ConfigError``
as the error it raises instead (see ``Redactor.config_error``).

The shapes of vendor credentials follow the public rulesets secret scanners
maintain (gitleaks' ``config/gitleaks.toml``, Yelp's detect-secrets plugins,
TruffleHog's detectors): each rule here names the prefix those rules key on,
and that prefix is the rule's prefilter token.
"""

from __future__ import annotations

import base64
import binascii
import functools
import itertools
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_REDACTOR",
    "DEFAULT_SENSITIVE_KEYS",
    "DEFAULT_STATUS_KEYS",
    "PII_KEYS",
    "PREFILTER_TOKENS",
    "Redactor",
    "RedactorConfigError",
    "is_card_number",
    "is_sensitive_key",
    "might_contain_secret",
    "redact_text",
    "redact_value",
]


class RedactorConfigError(ValueError):
    """A :class:`Redactor` was given settings it cannot use (the message says which, and why)."""


def _type_name(value: object) -> str:
    return type(value).__name__


DEFAULT_SENSITIVE_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "pw",
        "passcode",
        "passphrase",
        "pin",
        "otp",
        "secret",
        "client_secret",
        "secret_key",
        "secret_access_key",  # also covers aws_secret_access_key
        # Azure Storage AccountKey=, Service Bus SharedAccessKey=, Alibaba AccessKey.
        "account_key",
        "access_key",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "csrftoken",  # Django's cookie; csrf_token ends with _token already
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "set_cookie",
        "session",
        "session_id",
        "sessionid",
        "jsessionid",  # Java servlets
        "phpsessid",
        "sid",  # connect.sid (Express), and the like
        "private_key",
        "credential",
        "credentials",
        # Presigned-URL signatures (X-Amz-Signature) grant access on their own.
        "signature",
        "card_number",
        "cvv",
        "ssn",
        "connection_string",
        "dsn",
    }
)
"""Key words whose values are secret, in normalised form (lowercase, ``_`` between words)."""

DEFAULT_STATUS_KEYS: frozenset[str] = frozenset({"auth", "pass"})
"""Key words whose values are secret unless they read as a status.

``auth`` holds Docker's base64 ``user:password`` (``config.json``) and
``basic_auth`` credentials, ``pass`` a password; both also label a result
(``auth: ok``, ``pass: true``).  So ``true``, ``ok``, ``failed`` and the like
stay, anything else under them is redacted, and :meth:`Redactor.is_sensitive_key`
says False for them: not every value under them is secret.
"""

PII_KEYS: frozenset[str] = frozenset(
    {"email", "email_address", "phone", "phone_number", "iban", "date_of_birth", "dob"}
)
"""Key words added by ``Redactor(pii=True)``: personal data that is not a credential."""

# Key words that would otherwise make a prefilter token matching common words
# ("ping", "mapping", "passed", "author", "inside").  A key is sensitive only if
# its normalised form ends with the word, so in any spelling of such a key the
# word is followed by what may follow a key: the token for these carries "$".
_WORD_END_KEYS = frozenset({"pin", "pass", "pw", "auth", "sid"})
# What may follow a key word in a pair (key=, key:, "key", 'key', \"key\",
# --key value, key_, key-, key.): a "tok$" token counts only before one of these.
_KEY_END = " \t=:\"'\\_-."

_STATUS_WORDS = frozenset(
    {
        "ok", "okay", "yes", "no", "none", "null", "true", "false", "on", "off",
        "success", "succeeded", "successful", "failed", "failure", "error", "denied",
        "granted", "required", "optional", "pending", "expired", "valid", "invalid",
        "missing", "skipped", "enabled", "disabled", "passed",
    }
)  # fmt: skip

# Text that each value pattern below requires; see the prefilter contract in
# janus_utils.security.  "^" before a token: it must start a word there (the
# character before is not an ASCII letter or digit); "$" after: it must end a
# key word (one of _KEY_END follows, or it ends a dict key).
_PATTERN_TOKENS: tuple[str, ...] = (
    "-----begin",  # PEM private key
    "akia",  # AWS access key id
    "asia",  # AWS temporary access key id
    "^aws",  # an AWS secret access key near the word "aws"
    "basic ",  # Authorization: Basic
    "bearer",  # Authorization: Bearer
    "digest",  # Authorization: Digest ... response="..."
    "eyj",  # JWT ('{"' in base64url)
    "ghp_",  # GitHub tokens
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",  # Slack tokens
    "xapp-",
    "hooks.slack.com",  # Slack incoming webhooks
    "k_live_",  # Stripe secret and restricted keys: sk_/rk_ + live/test/prod
    "k_test_",
    "k_prod_",
    "whsec_",  # Stripe webhook signing secret
    "^sk-",  # OpenAI (sk-, sk-proj-, ...) and Anthropic (sk-ant-)
    "aiza",  # Google API key
    "^sg.",  # SendGrid
    "npm_",  # npm
    "hf_",  # Hugging Face
    "api_org_",
    "glpat-",  # GitLab
    "gldt-",
    "glrt-",
    "glptt-",
    "glcbt-",
    "glft-",
    "glsoat-",
    "gloas-",
    "doo_v1_",  # DigitalOcean
    "dop_v1_",
    "dor_v1_",
    "shpat_",  # Shopify
    "shpca_",
    "shppa_",
    "shpss_",
    "pypi-ageichlwas5vcmc",  # PyPI upload token ("pypi.org" in its macaroon)
    "mailgun",  # Mailgun keys have no distinct prefix: found after the word, as gitleaks does
    "sig=",  # Azure SAS signature
)

# Personal data (Redactor(pii=True)): any digit or "@" sends text to the full pass.
_PII_TOKENS: tuple[str, ...] = ("@", *"0123456789")

# How the separator between the words of a key may be written: db_password,
# db-password, db.password, "db password", dbPassword.
_KEY_SEPARATORS = ("_", "-", ".", " ", "")

_MARKER = re.compile(r"\[REDACTED:[a-z0-9_]+\]")
_CYCLE = "[cycle]"
_DEPTH_LIMIT = "[depth limit]"
_UNREDACTABLE = "[unredactable]"
_MAX_DEPTH = 32
_KEY_CACHE_SIZE = 8192


def _marker(kind: str) -> str:
    return f"[REDACTED:{kind}]"


_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_LOWER_TABLE = str.maketrans(_ASCII_UPPER, _ASCII_UPPER.lower())


def _ascii_lower(text: str) -> str:
    # str.lower() also folds non-ASCII letters (KELVIN SIGN to "k"); the rule is
    # ASCII-only so that the C port over UTF-8 bytes gives the same answer.
    if text.isascii():
        return text.lower()
    return text.translate(_ASCII_LOWER_TABLE)


_SEPARATOR_CHARS = re.compile(r"[\-. ]")
_CAMEL_1 = re.compile(r"([A-Z]+)([A-Z][a-z])")
_CAMEL_2 = re.compile(r"([a-z0-9])([A-Z])")


def _normalise_word(word: str) -> str:
    return _SEPARATOR_CHARS.sub("_", _ascii_lower(word.strip())).strip("_")


# -- the prefilter ------------------------------------------------------------


def _split_token(token: str) -> tuple[str, bool, bool]:
    """``(text, starts a word, ends a key word)`` of a prefilter token such as ``"^sk-"``."""
    starts = token.startswith("^") and len(token) > 1
    ends = token.endswith("$") and len(token) > 1 + starts
    return token[1 if starts else 0 : len(token) - 1 if ends else len(token)], starts, ends


def _is_word_char(char: str) -> bool:
    return char.isascii() and char.isalnum()


def _implies(token: str, other: str) -> bool:
    """Whether text that *other* matches is always matched by *token* too."""
    text, starts, ends = _split_token(token)
    other_text, other_starts, other_ends = _split_token(other)
    start = other_text.find(text)
    while start != -1:
        end = start + len(text)
        left_ok = not starts or (
            other_starts if start == 0 else not _is_word_char(other_text[start - 1])
        )
        right_ok = not ends or (
            other_ends if end == len(other_text) else other_text[end] in _KEY_END
        )
        if left_ok and right_ok:
            return True
        start = other_text.find(text, start + 1)
    return False


def _covers(token: str, parts: list[str]) -> bool:
    """Whether *token* matches every spelling of the key word made of *parts*."""
    text, starts, ends = _split_token(token)
    if starts:
        return False
    if ends:
        # Spelt as a key, the word ends where the key does (see _WORD_END_KEYS).
        return parts[-1].endswith(text)
    return any(text in part for part in parts)


def _derive_prefilter_tokens(
    words: Iterable[str], pattern_tokens: Iterable[str]
) -> tuple[str, ...]:
    """The fewest tokens such that every spelling of every key word matches one."""
    return _derive_tokens(frozenset(words), tuple(pattern_tokens))


# The default rules are derived by each Redactor (two at import, one per
# configure()): tens of milliseconds each, the same answer every time.
@functools.lru_cache(maxsize=16)
def _derive_tokens(unique_words: frozenset[str], pattern_tokens: tuple[str, ...]) -> tuple[str, ...]:
    words = sorted(unique_words)
    candidates = set(pattern_tokens)
    candidates.update(
        word + "$" if word in _WORD_END_KEYS else word for word in words if "_" not in word
    )
    singles = set(candidates)
    for word in words:
        if "_" not in word:
            continue
        parts = word.split("_")
        # A token inside one of the word's parts is in every spelling of it.
        if any(_covers(token, parts) for token in singles):
            continue
        if len(parts) <= 3:
            for seps in itertools.product(_KEY_SEPARATORS, repeat=len(parts) - 1):
                candidates.add(parts[0] + "".join(s + p for s, p in zip(seps, parts[1:])))
        else:
            # Too many spellings to list; the longest part appears in all of them.
            candidates.add(max(parts, key=len))
    kept: list[str] = []
    for token in sorted(candidates, key=lambda t: (len(_split_token(t)[0]), t)):
        # A token whose every match a kept one also matches is never the only match.
        if not any(_implies(shorter, token) for shorter in kept):
            kept.append(token)
    return tuple(sorted(kept))


def _group_by_prefix(tokens: list[str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Tokens under their first three characters: a text without the prefix skips them all."""
    groups: dict[str, list[str]] = {}
    for token in tokens:
        groups.setdefault(token[:3], []).append(token)
    return tuple(
        (prefix, tuple(t for t in members if t != prefix)) for prefix, members in groups.items()
    )


class _Prefilter:
    """Rules (a)-(c) of the prefilter for one token list, compiled once.

    Plain tokens are grouped by their first three characters, so a clean text
    costs one substring search per group, not per token (the five spellings
    of api_key share "api").  Anchored tokens are looked for as plain
    substrings first: the regular expression that checks their word
    boundaries runs only on a hit.
    """

    __slots__ = ("anchored", "anchored_bytes", "bare", "bare_bytes", "plain", "plain_bytes")

    def __init__(self, tokens: tuple[str, ...]) -> None:
        plain: list[str] = []
        bare: list[str] = []
        anchored: list[str] = []
        for token in tokens:
            text, starts, ends = _split_token(token)
            if not (starts or ends):
                plain.append(text)
                continue
            bare.append(text)
            anchored.append(
                ("(?<![a-z0-9])" if starts else "")
                + re.escape(text)
                + ("(?=[" + re.escape(_KEY_END) + "])" if ends else "")
            )
        self.plain = _group_by_prefix(plain)
        self.plain_bytes = tuple(
            (prefix.encode("ascii"), tuple(t.encode("ascii") for t in rest))
            for prefix, rest in self.plain
        )
        self.bare = tuple(dict.fromkeys(bare))
        self.bare_bytes = tuple(text.encode("ascii") for text in self.bare)
        joined = "|".join(anchored)
        self.anchored = re.compile(joined) if anchored else None
        self.anchored_bytes = re.compile(joined.encode("ascii")) if anchored else None

    def __call__(self, text: str) -> bool:
        if text.isascii():
            low = text.lower()
            for prefix, rest in self.plain:
                if prefix in low and (not rest or any(token in low for token in rest)):
                    return True
            for token in self.bare:
                if token in low:
                    if self.anchored.search(low) is not None:  # type: ignore[union-attr]
                        return True
                    break
        else:
            # bytes.lower() folds ASCII letters only, as the rule says; the
            # tokens are ASCII, so a match in the UTF-8 bytes is a match in the text.
            data = text.encode("utf-8", errors="surrogatepass").lower()
            for prefix_bytes, rest_bytes in self.plain_bytes:
                if prefix_bytes in data and (
                    not rest_bytes or any(token in data for token in rest_bytes)
                ):
                    return True
            for token_bytes in self.bare_bytes:
                if token_bytes in data:
                    if self.anchored_bytes.search(data) is not None:  # type: ignore[union-attr]
                        return True
                    break
        if _DIGIT_RUN.search(text) is not None:
            return True
        return "/" in text and "@" in text and _SLASH_AT.search(text) is not None


_DIGIT_RUN = re.compile(r"[0-9](?:[ \t.\-]*+[0-9]){12}")
# Rule (c) in linear time: only the first "/" of a stretch without white space
# matters (an '@' after a later one is after the first one too), so start at
# each stretch and commit, atomically, to its first "/".
_SLASH_AT = re.compile(r"(?<![^ \t\n\r\x0b\x0c])(?>[^ \t\n\r\x0b\x0c/]*+/)[^ \t\n\r\x0b\x0c@]*+@")


# -- value patterns ---------------------------------------------------------
#
# Each is compiled with re.ASCII so that \s, \b and IGNORECASE mean exactly
# what the prefilter assumes, and each requires one of the prefilter tokens
# (or a digit run, or "/" then "@").  Where a pattern could start at every
# character of a long run, a look-behind makes it start only at the run's
# beginning, so that the scan stays linear on hostile input.

_A = re.ASCII
_AI = re.ASCII | re.IGNORECASE

_PEM = re.compile(
    r"-----BEGIN[ A-Z0-9]*PRIVATE KEY[ A-Z0-9]*-----"
    r".*?(?:-----END[ A-Z0-9]*PRIVATE KEY[ A-Z0-9]*-----|\Z)",  # unterminated: to the end
    _AI | re.DOTALL,
)
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<prefix>[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:]*:)"
    r"(?P<secret>[^\s/?#]+)(?=@)",  # up to the last '@': passwords may hold a raw '@'
    _A,
)
_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"
    r"(?:\.[A-Za-z0-9_\-]+){0,2}",  # JWE has five parts
    _A,
)
_BEARER = re.compile(r"\b(?P<prefix>bearer[ \t]+)(?P<secret>[A-Za-z0-9\-._~+/=]+)", _AI)
_BASIC = re.compile(r"\b(?P<prefix>basic +)(?P<secret>[A-Za-z0-9+/=]+)", _AI)
# Digest's response is a hash of the password: one guess per word of a list.
_DIGEST_RESPONSE = re.compile(
    r"(?P<prefix>\bdigest[ \t]+(?:[^\r\n]{0,400}?[ \t,])?response[ \t]*=[ \t]*\"?)"
    r"(?P<secret>[0-9a-f]{16,})",
    _AI,
)
_AWS_KEY = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", _A)
# A secret access key has no prefix: 40 base64 characters, found near "aws" or
# a key id (detect-secrets' AWSKeyDetector and TruffleHog pair them the same way).
_AWS_CONTEXT = re.compile(r"(?<![A-Za-z0-9])(?:[Aa][Ww][Ss]|(?:AKIA|ASIA)[A-Z0-9]{16})", _A)
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])", _A)
_GITHUB_TOKEN = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}", _A
)
_SLACK_TOKEN = re.compile(
    r"(?<![A-Za-z0-9\-])(?:xox[abprse](?:\.xox[abprse])?-[0-9]+|xapp-[0-9]+)-[A-Za-z0-9\-]+", _A
)
_SLACK_WEBHOOK = re.compile(
    r"(?P<prefix>hooks\.slack\.com/(?:services|workflows|triggers)/)(?P<secret>[A-Za-z0-9_/+\-]{16,})",
    _AI,
)
_STRIPE_KEY = re.compile(r"(?<![A-Za-z0-9])[sr]k_(?:live|test|prod)_[A-Za-z0-9]{10,}", _A)
_STRIPE_WEBHOOK = re.compile(r"(?<![A-Za-z0-9])whsec_[A-Za-z0-9+/=]{16,}", _A)
_ANTHROPIC_KEY = re.compile(r"(?<![A-Za-z0-9_\-])sk-ant-[A-Za-z0-9_\-]{20,}", _A)
_OPENAI_KEY = re.compile(r"(?<![A-Za-z0-9_\-])sk-(?P<body>[A-Za-z0-9_\-]{20,})", _A)
_GOOGLE_API_KEY = re.compile(r"(?<![A-Za-z0-9_\-])AIza[A-Za-z0-9_\-]{35,}", _A)
_SENDGRID_KEY = re.compile(r"(?<![A-Za-z0-9_.\-])SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}", _A)
_NPM_TOKEN = re.compile(r"(?<![A-Za-z0-9])npm_[A-Za-z0-9]{36,}", _A)
_HUGGINGFACE_TOKEN = re.compile(r"(?<![A-Za-z0-9])(?:hf|api_org)_[A-Za-z0-9]{30,}", _A)
_GITLAB_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])gl(?:pat|dt|rt|ptt|cbt|ft|soat|oas)-[A-Za-z0-9_\-]{20,}", _A
)
_DIGITALOCEAN_TOKEN = re.compile(r"(?<![A-Za-z0-9])do[opr]_v1_[a-f0-9]{64}", _A)
_SHOPIFY_TOKEN = re.compile(r"(?<![A-Za-z0-9])shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}", _A)
_PYPI_TOKEN = re.compile(r"pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}", _A)
_MAILGUN_CONTEXT = re.compile(r"mailgun", _AI)
_MAILGUN_KEY = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:(?:pub)?key-[a-z0-9]{32}|[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8})"
    r"(?![A-Za-z0-9])",
    _A,
)
_NEAR = 160  # how far after its context word (same line) a context-found key may be
_SAS_SIGNATURE = re.compile(
    r"(?<![A-Za-z0-9_])(?P<prefix>sig=)(?P<secret>[A-Za-z0-9%+/=_\-]{16,})", _AI
)
# Oracle's user/password@database (sqlplus, JDBC thin, cx_Oracle).  The form
# is also a package pinned to a version (actions/checkout@v4) or an image by
# digest (library/nginx@sha256:...), so it counts only beside an Oracle word
# or with a database part that names a host (//host, host:1521, (DESCRIPTION=)).
_ORACLE = re.compile(
    r"(?<![A-Za-z0-9_$#./@\\\-])(?P<user>[A-Za-z][A-Za-z0-9_$#]{0,127})/"
    r"(?P<secret>[^\s/@\"'`<>]{1,128})@(?P<db>[^\s\"'`<>]{1,256})",
    _A,
)
_ORACLE_CONTEXT = re.compile(r"oracle|sqlplus|\bconn(?:ect)?\b|userid|\btns|\brman\b", _AI)
_ORACLE_HOST_DB = re.compile(r"//|\(|[A-Za-z0-9.\-]+:[0-9]{2,5}(?![0-9A-Za-z])", _A)
_NOT_A_DATABASE = re.compile(r"v?[0-9]+(?:\.[0-9]+)*(?![A-Za-z0-9_\-])|sha[0-9]+:", _AI)
# Runs of digit groups joined by spaces or tabs or single dashes, not inside a
# word, a hex string or a decimal; and groups joined by dots (4111.1111.1111.1111).
# _sub_card looks inside each run for card numbers.
_DIGIT_GROUPS = re.compile(r"(?<![0-9A-Za-z_.])[0-9]++(?:(?:[ \t]++|-)[0-9]++)*+", _A)
_DOTTED_DIGITS = re.compile(
    r"(?<![0-9A-Za-z_.])[0-9]{4}(?:\.[0-9]{3,6}){2,4}(?![0-9A-Za-z_]|\.[0-9])", _A
)
_DIGITS = re.compile(r"[0-9]+")

# Cookie and Set-Cookie headers: every cookie, not only the first.
_COOKIE_HEADER = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:set-)?cookie[\"']?[ \t]*[:=][ \t]*[\"']?(?P<body>[^\r\n\"']+)", _AI
)
_COOKIE_PAIR = re.compile(r"[ \t]*(?P<name>[^=;\s]+)[ \t]*=[ \t]*(?P<value>[^;]*)", _A)
_COOKIE_ATTRIBUTES = frozenset(
    {"path", "domain", "expires", "max-age", "samesite", "secure", "httponly", "priority",
     "partitioned", "version", "comment"}
)  # fmt: skip

# -- personal data (Redactor(pii=True)) ----------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]{1,64}@"
    r"[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*"
    r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])",
    _A,
)
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])", _A)
_SSN = re.compile(r"(?<![0-9\-])(?!000|666|9[0-9]{2})[0-9]{3}-(?!00)[0-9]{2}-(?!0000)[0-9]{4}(?![0-9\-])", _A)

# key=value, key: value, "key": "value", 'key': 'value', key => value, and the
# pairs that have no "=": ('key', value) tuples in a list of headers,
# '--option', value in an argv list, and --option value on a command line.
# A one-item tuple, ('pin',), is no pair: its closing bracket is not a value.
_PAIR_KEY = re.compile(
    r"""
    (?:
        (?<=[\[(])[ \t]*b?(?P<tq>["'])(?P<tkey>[A-Za-z0-9_.\- ]{1,128})(?P=tq)[ \t]*,[ \t]*(?![)\]])
      | b?(?P<aq>["'])(?P<akey>--?[A-Za-z][A-Za-z0-9_.\-]{0,127})(?P=aq)[ \t]*,[ \t]*
      | (?P<q>\\?["'])(?P<qkey>[A-Za-z0-9_.\- ]{1,128})(?P=q)[ \t]*(?:=>|:=|[:=])[ \t]*
      | (?<![^\s"'(\[,])(?P<okey>--?[A-Za-z][A-Za-z0-9_.\-]{0,127})[ \t]+(?=[^\s\-=])
      | (?<![A-Za-z0-9_.\-])(?<!//)(?P<key>[A-Za-z0-9_.\-]{1,128})[ \t]*(?:=>|:=|[:=])[ \t]*
    )
    """,
    _A | re.VERBOSE,
)
_KEY_GROUPS = ("tkey", "akey", "qkey", "okey", "key")
# The value: Digest's parameter list; quoted (the quotes stay, a b'' prefix
# too; JSON inside a JSON string quotes it \" and writes a quote in it \\\",
# a backslash \\\\), braced as in ODBC's PWD={...}, a JSON scalar, or a bare
# word running to white space, a quote, ',', ';' or '&'.  Brackets do not end a bare word:
# a password may hold them, and losing a closing brace of the surrounding text
# is better than leaking its tail.
_PAIR_VALUE = re.compile(
    r"""
    (?:
        digest[ \t]+
        (?P<v0>[A-Za-z][\w\-]*[ \t]*=[ \t]*(?:"[^"\r\n]*"|[^\s,"']*)
          (?:[ \t]*,[ \t]*[A-Za-z][\w\-]*[ \t]*=[ \t]*(?:"[^"\r\n]*"|[^\s,"']*))*)
      |
        (?P<scheme>(?:bearer|basic|digest|token|negotiate|ntlm)[ \t]+(?=\S))?
        (?:b(?=["']))?
        (?:
            \\"(?P<v1>(?:\\\\\\"|\\\\\\\\|(?!\\")[^\r\n])*)(?:\\")?
          | "(?P<v2>(?:[^"\\\r\n]|\\.)*)"?
          | '(?P<v3>(?:[^'\\\r\n]|\\.)*)'?
          | \{(?P<v4>[^}\r\n]*)\}?
          | (?P<v5>(?:-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|null|true|false)(?=[\s,;&}\])]|\Z))
          | (?P<v6>[^\s"',;&]+)
        )
    )
    """,
    _AI | re.VERBOSE,
)
_VALUE_GROUPS = ("v0", "v1", "v2", "v3", "v4", "v5", "v6")
_OPTION = re.compile(r"--?[A-Za-z][A-Za-z0-9_.\-]{0,127}", _A)

# Validation errors (pydantic, FastAPI) name the field apart from its value:
# the value is secret when a part of the field's path is a sensitive key.
# The errors list, as a repr or as JSON: 'loc': ('body', 'password'),
# 'msg': '...', 'input': 'VALUE' (pydantic's order: loc, msg, then input).
_QUOTED = r"""(?:\\"(?:\\\\\\"|\\\\\\\\|(?!\\")[^\r\n])*+\\"|"(?:[^"\\\r\n]|\\.)*+"|'(?:[^'\\\r\n]|\\.)*+')"""
_LOC_PART = rf"(?:{_QUOTED}|-?[0-9]++)"
_LOC_INPUT = re.compile(
    rf"""
    (?P<q>\\?["'])loc(?P=q)[ \t]*+:[ \t]*+
    [(\[](?P<loc>[ \t]*+{_LOC_PART}(?:[ \t]*+,[ \t]*+{_LOC_PART})*+[ \t]*+,?[ \t]*+)[)\]]
    (?:[ \t]*+,[ \t]*+(?P=q)(?!input(?P=q))[A-Za-z_]{{1,32}}(?P=q)[ \t]*+:[ \t]*+
       (?:{_QUOTED}|[A-Za-z0-9_.+\-]++))*+
    [ \t]*+,[ \t]*+(?P=q)input(?P=q)[ \t]*+:[ \t]*+
    """,
    _A | re.VERBOSE,
)
_LOC_ITEM = re.compile(r"""\\"((?:(?!\\").)*)\\"|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'""", _A)
# pydantic's text (str(ValidationError)): the field's dotted path on a line of
# its own, then "  <msg> [type=..., input_value=VALUE, input_type=...]".  The
# value runs to the line's last ", input_type=": a string may hold that text.
_FIELD_ERROR_LINE = re.compile(
    r"\n  (?>[^\n\[]*+(?:\[(?!type=)[^\n\[]*+)*+)\[type=[^\n,\]]*+, input_value="
    r"(?P<value>[^\n]*), input_type=[^\n\],]*+\]",
    _A,
)
_ERROR_COUNT_LINE = re.compile(r"[0-9]+ validation errors? for ", _A)
# The text _FIELD_ERROR_LINE requires: a field line may end with "pin" and a
# newline, which no "pin$" token matches.
_FIELD_ERROR_TOKENS: tuple[str, ...] = ("input_value=",)
_OPENING_BRACKETS = "[({"


def _bracketed_end(text: str, start: int) -> int:
    """The end of the list, tuple or dict opening at *start* (quotes respected), else of its line."""
    depth = 0
    quote = ""
    index = start
    while index < len(text):
        char = text[index]
        if char in "\r\n":
            return index
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    return index


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def _is_card_digits(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and "2" <= digits[0] <= "6" and _luhn_valid(digits)


def is_card_number(value: object) -> bool:
    """True for an int that reads as a card number: 13-19 digits, issuer digit 2-6, Luhn-valid.

    The rule the C encoder applies to int fields too: such a field is redacted
    whole, as a card number written as text would be.
    """
    return type(value) is int and 10**12 <= value < 10**19 and _is_card_digits(str(value))


def _sub_card(match: re.Match[str]) -> str:
    """Replace the card numbers in one run of digit groups.

    A card number is 13-19 digits that pass the Luhn check and start with an
    issuer digit (2-6: Mastercard, Amex/Diners/JCB, Visa, Discover/UnionPay;
    this keeps 13-digit epoch milliseconds, 1..., out).  It is made of whole
    groups of the run: one group, or a first group of 4+ digits and further
    groups of 3+, as cards are printed (4-4-4-4, 4-6-5).  So the card in
    ``4111 1111 1111 1111 12/25`` is found and the expiry kept, while a group
    is never split and a table of short numbers is not read as a card.
    """
    run = match.group(0)
    after = match.string[match.end() : match.end() + 2]
    spans = [(m.start(), m.end()) for m in _DIGITS.finditer(run)]
    next_char = after[:1]
    if (next_char.isascii() and (next_char.isalpha() or next_char == "_")) or (
        next_char == "." and after[1:2].isdigit()
    ):
        # The last group runs into a word or a decimal: not part of a card.
        spans.pop()
    out: list[str] = []
    done = 0
    i = 0
    while i < len(spans):
        best = -1
        first = run[spans[i][0] : spans[i][1]]
        if "2" <= first[0] <= "6" and len(first) >= 4:
            digits = ""
            for j in range(i, len(spans)):
                group = run[spans[j][0] : spans[j][1]]
                if j > i and len(group) < 3:
                    break
                digits += group
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _luhn_valid(digits):
                    best = j
        if best < 0:
            i += 1
            continue
        out.append(run[done : spans[i][0]])
        out.append(_marker("card"))
        done = spans[best][1]
        i = best + 1
    if not out:
        return run
    out.append(run[done:])
    return "".join(out)


def _sub_prefixed(kind: str) -> Callable[[re.Match[str]], str]:
    marker = _marker(kind)

    def sub(match: re.Match[str]) -> str:
        if _MARKER.fullmatch(match.group("secret")):
            return match.group(0)
        return match.group("prefix") + marker

    return sub


def _sub_bearer(match: re.Match[str]) -> str:
    token = match.group("secret")
    # "bearer tokens" in prose is not a credential; a real one is long or has digits.
    if len(token) < 20 and not any(ch.isdigit() for ch in token):
        return match.group(0)
    return match.group("prefix") + _marker("bearer")


def _sub_basic(match: re.Match[str]) -> str:
    # Only what decodes as base64 "user:password": "Basic authentication" stays.
    try:
        decoded = base64.b64decode(match.group("secret"), validate=True)
    except (binascii.Error, ValueError):
        return match.group(0)
    if b":" not in decoded:
        return match.group(0)
    return match.group("prefix") + _marker("basic")


def _sub_openai(match: re.Match[str]) -> str:
    # Random keys hold letters and digits; "sk-learn-compatible-wrapper" holds no digit.
    body = match.group("body")
    if not any(ch.isdigit() for ch in body) or not any(ch.isalpha() for ch in body):
        return match.group(0)
    return _marker("openai_key")


def _aws_secret_shape(secret: str) -> bool:
    # A key mixes cases and digits (or holds / or +); a git SHA does not.
    return (
        any(ch.isupper() for ch in secret)
        and any(ch.islower() for ch in secret)
        and any(ch.isdigit() or ch in "/+" for ch in secret)
    )


def _sub_near(
    text: str,
    context: re.Pattern[str],
    secret: re.Pattern[str],
    kind: str,
    accept: Callable[[str], bool] = lambda _: True,
) -> str:
    """*text* with each *secret* found on a line within _NEAR characters after *context* redacted."""
    spans: list[tuple[int, int]] = []
    for found in context.finditer(text):
        end = found.end()
        line_end = text.find("\n", end, end + _NEAR)
        window_end = line_end if line_end != -1 else end + _NEAR
        for candidate in secret.finditer(text, end, window_end):
            if accept(candidate.group(0)) and (not spans or candidate.start() >= spans[-1][1]):
                spans.append(candidate.span())
    if not spans:
        return text
    out: list[str] = []
    done = 0
    for start, end in spans:
        out.append(text[done:start])
        out.append(_marker(kind))
        done = end
    out.append(text[done:])
    return "".join(out)


def _sub_oracle(match: re.Match[str]) -> str:
    db = match.group("db")
    if _MARKER.fullmatch(match.group("secret")) or _NOT_A_DATABASE.match(db):
        return match.group(0)
    text = match.string
    line_start = text.rfind("\n", 0, match.start()) + 1
    context = text[max(line_start, match.start() - 120) : match.start()]
    if _ORACLE_CONTEXT.search(context) is None and _ORACLE_HOST_DB.match(db) is None:
        return match.group(0)
    return f"{match.group('user')}/{_marker('password')}@{db}"


def _iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _sub_iban(match: re.Match[str]) -> str:
    return _marker("iban") if _iban_valid(match.group(0)) else match.group(0)


_SCHEME = re.compile(r"(?:bearer|basic|digest|token|negotiate|ntlm)?", _AI)


def _only_markers(value: object) -> bool:
    """A string that is markers only, maybe after an auth scheme: nothing left to redact."""
    if not isinstance(value, str) or _MARKER.search(value) is None:
        return False
    return _SCHEME.fullmatch(_MARKER.sub("", value).strip()) is not None


def _is_status(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return True
    return isinstance(value, str) and value.strip().lower() in _STATUS_WORDS


def _looks_secret(value: str) -> bool:
    """A cookie value that reads as a session id or token rather than a preference."""
    if _MARKER.fullmatch(value):
        return False
    has_digit = any(ch.isdigit() for ch in value)
    has_alpha = any(ch.isalpha() for ch in value)
    return len(value) >= 16 or (len(value) >= 8 and has_digit and has_alpha)


_Replacement = Callable[[re.Match[str]], str] | str

# Before the key=value rule: a value it then finds redacted keeps the marker
# that says what it is ("Authorization: Bearer [REDACTED:jwt]").
_VALUE_PASSES: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    # Whole private keys first: they span lines and hold base64 the others could nibble.
    (_PEM, _marker("private_key")),
    (_URL_CREDENTIALS, _sub_prefixed("url_password")),
    (_JWT, _marker("jwt")),
    (_BEARER, _sub_bearer),
    (_BASIC, _sub_basic),
    (_AWS_KEY, _marker("aws_key")),
    (_GITHUB_TOKEN, _marker("github_token")),
    (_SLACK_TOKEN, _marker("slack_token")),
    (_DIGIT_GROUPS, _sub_card),
    (_DOTTED_DIGITS, _sub_card),
)

# After it: a vendor token under a sensitive key is named by the key
# ("api_key": "[REDACTED:api_key]"); these find the ones no key announces.
_TOKEN_PASSES: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (_SLACK_WEBHOOK, _sub_prefixed("slack_webhook")),
    (_DIGEST_RESPONSE, _sub_prefixed("digest_response")),
    (_STRIPE_KEY, _marker("stripe_key")),
    (_STRIPE_WEBHOOK, _marker("stripe_webhook_secret")),
    (_ANTHROPIC_KEY, _marker("anthropic_key")),
    (_OPENAI_KEY, _sub_openai),
    (_GOOGLE_API_KEY, _marker("google_api_key")),
    (_SENDGRID_KEY, _marker("sendgrid_key")),
    (_NPM_TOKEN, _marker("npm_token")),
    (_HUGGINGFACE_TOKEN, _marker("huggingface_token")),
    (_GITLAB_TOKEN, _marker("gitlab_token")),
    (_DIGITALOCEAN_TOKEN, _marker("digitalocean_token")),
    (_SHOPIFY_TOKEN, _marker("shopify_token")),
    (_PYPI_TOKEN, _marker("pypi_token")),
    (_SAS_SIGNATURE, _sub_prefixed("sas_signature")),
    (_ORACLE, _sub_oracle),
)

_PII_PASSES: tuple[tuple[re.Pattern[str], _Replacement], ...] = (
    (_EMAIL, _marker("email")),
    (_IBAN, _sub_iban),
    (_SSN, _marker("ssn")),
)

# Enough for any text seen in testing to settle after two; a bound in case.
_MAX_ROUNDS = 8


class Redactor:
    """Removes secrets from log text and fields; configured once, used on every log call.

    *keys* are the key words whose values are secret (default
    :data:`DEFAULT_SENSITIVE_KEYS`), *extra_keys* adds to them.  Words are
    normalised like keys: ``"X-Api-Key"`` becomes ``x_api_key``.  With
    ``patterns=False`` only values under sensitive keys are redacted, not
    JWTs, tokens, card numbers and the like found elsewhere in text.  With
    ``pii=True`` personal data is redacted as well: e-mail addresses, IBANs
    (checksum-valid), US social security numbers written ``123-45-6789``,
    and the values of :data:`PII_KEYS`; every text holding a digit or an
    ``@`` then takes the full pass, which costs the log call several
    microseconds.  Unusable settings raise :attr:`config_error`
    (``ConfigError`` for :class:`janus_utils.security.Redactor`), saying
    what to use instead.

    Safe to share between threads: the only state that changes is the key
    cache, a dict that is only ever added to or cleared.
    """

    config_error: ClassVar[type[Exception]] = RedactorConfigError
    """What unusable settings raise; the public subclass in janus_utils.security says ConfigError."""

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        extra_keys: Iterable[str] = (),
        patterns: bool = True,
        pii: bool = False,
        status_keys: Iterable[str] = DEFAULT_STATUS_KEYS,
    ) -> None:
        words = self._check_words(keys, "keys") | self._check_words(extra_keys, "extra_keys")
        if pii:
            words |= PII_KEYS
        self._keys = frozenset(words)
        self._status_keys = self._check_words(status_keys, "status_keys") - self._keys
        self._words = self._keys | self._status_keys
        self._patterns = bool(patterns)
        self._pii = bool(pii)
        pattern_tokens = _PATTERN_TOKENS if self._patterns else ()
        self._tokens = _derive_prefilter_tokens(
            self._words,
            _FIELD_ERROR_TOKENS + pattern_tokens + (_PII_TOKENS if self._pii else ()),
        )
        self._prefilter = _Prefilter(self._tokens)
        self._key_cache: dict[str, str | None] = {}

    @classmethod
    def _check_words(cls, source: Iterable[str], name: str) -> frozenset[str]:
        if isinstance(source, (str, bytes)):
            raise cls.config_error(f"{name} must be a list of key names, not a single string")
        return frozenset(cls._check_word(word, name) for word in source)

    @classmethod
    def _check_word(cls, word: object, name: str) -> str:
        if not isinstance(word, str):
            raise cls.config_error(f"{name} must hold strings, got {_type_name(word)}")
        normal = _normalise_word(word)
        # "redacted" would make every marker look like a pair and match itself.
        usable = re.fullmatch(r"[a-z0-9_]+", normal, re.ASCII) is not None
        if not usable or len(normal) < 2 or normal == "redacted":
            raise cls.config_error(
                f"{name} entry {word!r} is not usable: use 2 or more ASCII letters, digits, "
                "'_', '-' or '.', like 'pin_code'"
            )
        return normal

    def __repr__(self) -> str:
        pii = ", pii=True" if self._pii else ""
        return f"Redactor(keys={len(self._keys)}, patterns={self._patterns}{pii})"

    @property
    def keys(self) -> frozenset[str]:
        """The normalised key words this redactor treats as sensitive."""
        return self._keys

    @property
    def status_keys(self) -> frozenset[str]:
        """The key words whose values are secret unless they read as a status (``auth: ok``)."""
        return self._status_keys

    @property
    def patterns(self) -> bool:
        """Whether value patterns (JWTs, tokens, cards, ...) are redacted as well as keys."""
        return self._patterns

    @property
    def pii(self) -> bool:
        """Whether personal data (e-mail addresses, IBANs, SSNs) is redacted too."""
        return self._pii

    @property
    def prefilter_tokens(self) -> tuple[str, ...]:
        """Rule (a) of the prefilter for this key set: lowercase ASCII, "^"/"$" word anchors."""
        return self._tokens

    # -- keys ---------------------------------------------------------------

    def key_class(self, key: object) -> str | None:
        """The key word that makes *key* sensitive (``"password"`` for ``DB-Password``), or None.

        Matching is ASCII case-insensitive; ``-``, ``.``, space and camelCase
        boundaries count as ``_``.  A key is sensitive if it is one of the words
        or ends with ``_`` and one of them: ``github_token`` and ``set-cookie``
        are, ``token_count``, ``monkey`` and ``keyboard`` are not; nor are
        the :attr:`status_keys` (see :meth:`secret_kind`).
        """
        word = self._word_of(key)
        return None if word in self._status_keys else word

    def secret_kind(self, key: object, value: object) -> str | None:
        """The marker kind if *value*, found under *key*, is secret; else None.

        :meth:`key_class`, and for the :attr:`status_keys` any value but a
        status: None, a bool, or a word such as ``ok``, ``true``, ``failed``.
        """
        word = self._word_of(key)
        if word is None or (word in self._status_keys and _is_status(value)):
            return None
        return word

    def _word_of(self, key: object) -> str | None:
        if type(key) is not str:
            if isinstance(key, str):
                key = str.__str__(key)
            elif isinstance(key, bytes):
                key = key.decode("utf-8", errors="replace")
            else:
                return None
        cache = self._key_cache
        try:
            return cache[key]
        except KeyError:
            pass
        kind = self._classify(key)
        if len(cache) >= _KEY_CACHE_SIZE:
            # Keys may come from request data; a bound keeps memory flat.
            cache.clear()
        cache[key] = kind
        return kind

    def _classify(self, key: str) -> str | None:
        words = self._words
        stripped = key.strip()
        plain = _normalise_word(stripped)
        camel = _normalise_word(_CAMEL_2.sub(r"\1_\2", _CAMEL_1.sub(r"\1_\2", stripped)))
        for normal in (camel, plain) if camel != plain else (plain,):
            if normal in words:
                return normal
            start = normal.find("_")
            while start != -1:
                # Left to right: the longest matching word names the class.
                suffix = normal[start + 1 :]
                if suffix in words:
                    return suffix
                start = normal.find("_", start + 1)
        return None

    def is_sensitive_key(self, key: object) -> bool:
        """True if values under *key* are secret; see :meth:`key_class`."""
        return self.key_class(key) is not None

    # -- text ---------------------------------------------------------------

    def might_contain_secret(self, text: str) -> bool:
        """The prefilter (see janus_utils.security) with this redactor's tokens."""
        return self._prefilter(text)

    def redact_text(self, text: str) -> str:
        """*text* with every secret replaced by a ``[REDACTED:<kind>]`` marker.

        Idempotent: markers never match, so redacting twice changes nothing
        more.  Text the prefilter passes comes back as the same object.
        """
        if type(text) is not str:
            if not isinstance(text, str):
                raise TypeError(f"redact_text needs a str, got {_type_name(text)}")
            text = str.__str__(text)
        if not self._prefilter(text):
            return text
        return self._redact_unfiltered(text)

    def _redact_unfiltered(self, text: str) -> str:
        # One replacement can change what is next to another (a value ends,
        # a card number is no longer preceded by a digit), so repeat until the
        # text settles: that is what makes redact_text idempotent.
        for _ in range(_MAX_ROUNDS):
            result = self._redact_once(text)
            if result == text:
                break
            text = result
        return text

    def _redact_once(self, text: str) -> str:
        if self._patterns:
            for pattern, replacement in _VALUE_PASSES:
                text = pattern.sub(replacement, text)
        text = self._redact_pairs(text)
        text = self._redact_field_errors(text)
        if self._patterns:
            for pattern, replacement in _TOKEN_PASSES:
                text = pattern.sub(replacement, text)
            text = _sub_near(text, _AWS_CONTEXT, _AWS_SECRET, "aws_secret_key", _aws_secret_shape)
            text = _sub_near(text, _MAILGUN_CONTEXT, _MAILGUN_KEY, "mailgun_key")
            text = _COOKIE_HEADER.sub(self._sub_cookies, text)
        if self._pii:
            for pattern, replacement in _PII_PASSES:
                text = pattern.sub(replacement, text)
        return text

    def _sub_cookies(self, match: re.Match[str]) -> str:
        # The first cookie is the header's value and goes with the key=value
        # rule; the others are redacted here when their name is sensitive or
        # their value reads as an id ("theme=dark" stays).
        body = match.group("body")
        head, sep, rest = body.partition(";")
        if not sep:
            return match.group(0)
        segments = []
        for segment in rest.split(";"):
            pair = _COOKIE_PAIR.match(segment)
            if pair is not None and pair.group("name").lower() not in _COOKIE_ATTRIBUTES:
                value = pair.group("value").rstrip()
                secret = self.secret_kind(pair.group("name"), value) or _looks_secret(value)
                if value and secret and _MARKER.fullmatch(value) is None:
                    start = pair.start("value")
                    segment = segment[:start] + _marker("cookie") + segment[start + len(value) :]
            segments.append(segment)
        prefix = match.group(0)[: match.start("body") - match.start()]
        return prefix + ";".join([head, *segments])

    def _redact_pairs(self, text: str) -> str:
        search = _PAIR_KEY.search
        match = search(text)
        if match is None:
            return text
        out: list[str] = []
        done = 0
        while match is not None:
            key = next(match.group(name) for name in _KEY_GROUPS if match.group(name) is not None)
            kind = self._word_of(key)
            if kind is None:
                # Not a secret: look again from the next character, so that a
                # pair inside this one's value ("note: password=x") is found.
                match = search(text, match.start() + 1)
                continue
            value = _PAIR_VALUE.match(text, match.end())
            if value is None:
                match = search(text, match.end())
                continue
            group = next(name for name in _VALUE_GROUPS if value.group(name) is not None)
            secret = value.group(group)
            keep = kind in self._status_keys and _is_status(secret)
            if secret and not keep and _MARKER.fullmatch(secret) is None:
                out.append(text[done : value.start(group)])
                out.append(_marker(kind))
                done = value.end(group)
            match = search(text, max(value.end(), match.end()))
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)

    def _field_kind(self, path: Iterable[object], value: object) -> str | None:
        """The marker kind if *value*, the input of the field at *path*, is secret; else None.

        Secret when a part of the path is a sensitive key, as a value nested
        anywhere under a sensitive key is in a dict.
        """
        for part in path:
            if isinstance(part, str):
                kind = self.secret_kind(part, value)
                if kind is not None:
                    return kind
        return None

    def _redact_field_errors(self, text: str) -> str:
        """*text* with the input of each validation error of a sensitive field redacted."""
        spans: list[tuple[int, int, str]] = []
        if "loc" in text:
            scanned = 0
            for match in _LOC_INPUT.finditer(text):
                start = match.end()
                if start < scanned:
                    continue  # inside the input before: each character is scanned once
                if start < len(text) and text[start] in _OPENING_BRACKETS:
                    value = (start, _bracketed_end(text, start))
                    scanned = value[1]
                else:
                    found = _PAIR_VALUE.match(text, start)
                    if found is None:
                        continue
                    group = next(name for name in _VALUE_GROUPS if found.group(name) is not None)
                    value = found.span(group)
                secret = text[value[0] : value[1]]
                parts = [next(g for g in item.groups() if g is not None)
                         for item in _LOC_ITEM.finditer(match.group("loc"))]  # fmt: skip
                kind = self._field_kind(parts, secret)
                if kind is not None and secret and _MARKER.fullmatch(secret) is None:
                    spans.append((value[0], value[1], kind))
        if "input_value=" in text:
            for match in _FIELD_ERROR_LINE.finditer(text):
                line_start = text.rfind("\n", 0, match.start()) + 1
                field = text[line_start : match.start()]
                if not field or field[0].isspace() or _ERROR_COUNT_LINE.match(field):
                    continue
                start, end = match.span("value")
                secret = match.group("value")
                inner = _unquoted(secret)
                kind = self._field_kind(field.split("."), inner)
                if kind is None or _MARKER.fullmatch(inner) is not None:
                    continue
                if inner is not secret:
                    start, end = start + 1, end - 1
                spans.append((start, end, kind))
        if not spans:
            return text
        out: list[str] = []
        done = 0
        for start, end, kind in sorted(spans):
            if start < done:
                continue
            out.append(text[done:start])
            out.append(_marker(kind))
            done = end
        out.append(text[done:])
        return "".join(out)

    # -- structured values ---------------------------------------------------

    def redact_value(self, obj: Any) -> Any:
        """A copy of *obj* with secrets removed; never raises and never changes *obj*.

        dicts, lists, tuples, sets and frozensets are copied (subclasses come
        back as the plain type); any value under a sensitive key becomes
        ``"[REDACTED:<kind>]"``, and so does the second item of a pair whose
        first names a sensitive key (``("Authorization", "Bearer ...")`` in a
        list of headers) and the item after a sensitive option in a list
        (``["--password", "..."]``); strings, keys included, go through
        :meth:`redact_text`; an int that reads as a card number (see
        :func:`is_card_number`) becomes ``"[REDACTED:card]"``; other objects
        are returned as they are.  A container that contains itself gives
        ``"[cycle]"``, one nested deeper than 32 levels ``"[depth limit]"``,
        one that fails while being read ``"[unredactable]"``.
        """
        try:
            return self._redact_obj(obj, 0, set())
        except Exception:
            return _UNREDACTABLE

    def _redact_obj(self, obj: Any, depth: int, active: set[int]) -> Any:
        if isinstance(obj, str):
            return self.redact_text(obj)
        if type(obj) is int:
            return _marker("card") if self._patterns and is_card_number(obj) else obj
        if not isinstance(obj, (dict, list, tuple, set, frozenset)):
            return obj
        if depth >= _MAX_DEPTH:
            return _DEPTH_LIMIT
        ident = id(obj)
        if ident in active:
            return _CYCLE
        active.add(ident)
        try:
            if isinstance(obj, dict):
                out: dict[Any, Any] = {}
                # A validation error ({"loc": (..., "password"), "input": ...}): the
                # input of a sensitive field is secret, as the text rule says.
                loc = dict.get(obj, "loc")
                input_kind = (
                    self._field_kind(loc, dict.get(obj, "input"))
                    if isinstance(loc, (list, tuple)) and "input" in obj
                    else None
                )
                for key, value in list(dict.items(obj)):
                    kind = self.secret_kind(key, value)
                    if kind is None and input_kind is not None and key == "input":
                        kind = input_kind
                    if kind is not None:
                        value = _marker(kind)
                    else:
                        value = self._redact_obj(value, depth + 1, active)
                    if isinstance(key, str):
                        key = self.redact_text(key)
                    elif type(key) is int and self._patterns and is_card_number(key):
                        key = _marker("card")
                    out[key] = value
                return out
            if isinstance(obj, (set, frozenset)):
                items = [self._redact_obj(item, depth + 1, active) for item in obj]
                return frozenset(items) if isinstance(obj, frozenset) else set(items)
            items = list(obj)
            secret_at = self._secret_positions(items)
            out_items = []
            for index, item in enumerate(items):
                redacted = self._redact_obj(item, depth + 1, active)
                if index in secret_at and not _only_markers(redacted):
                    # Secret by position; a value a pattern redacted whole
                    # keeps the marker that names it ("Bearer [REDACTED:jwt]").
                    redacted = _marker(secret_at[index])
                out_items.append(redacted)
            return tuple(out_items) if isinstance(obj, tuple) else out_items
        except Exception:
            return _UNREDACTABLE
        finally:
            active.discard(ident)

    def _secret_positions(self, items: list[Any]) -> dict[int, str]:
        """Indexes of a list's items that are secret by position, and the kind of each."""
        if len(items) == 2 and isinstance(items[0], (str, bytes)):
            # A (name, value) pair: a header, a form field, an environment variable.
            kind = self.secret_kind(items[0], items[1])
            if kind is not None:
                return {1: kind}
        found: dict[int, str] = {}
        for index in range(len(items) - 1):
            item = items[index]
            if isinstance(item, str) and item.startswith("-") and _OPTION.fullmatch(item):
                kind = self.secret_kind(item, items[index + 1])  # "--db-password": db_password
                if kind is not None:
                    found[index + 1] = kind
        return found


DEFAULT_REDACTOR = Redactor()
"""The redactor the module-level functions use: default keys, value patterns on."""

PREFILTER_TOKENS: tuple[str, ...] = DEFAULT_REDACTOR.prefilter_tokens
"""Rule (a) of the prefilter for the default key set: lowercase ASCII, "^"/"$" word anchors."""

is_sensitive_key = DEFAULT_REDACTOR.is_sensitive_key
redact_text = DEFAULT_REDACTOR.redact_text
redact_value = DEFAULT_REDACTOR.redact_value


def might_contain_secret(text: str) -> bool:
    """True if *text* may hold a secret by the default rule; False means redaction can be skipped.

    The exact rule is in the janus_utils.security docstring; a C port applies
    it to UTF-8 bytes and must agree with this function.
    """
    return DEFAULT_REDACTOR.might_contain_secret(text)
