"""Keep secrets and hostile input out of the logs: validation, sanitising, redaction, hashing.

Four groups of helpers, all pure Python and standard library only:

* ``validate_*`` check a value a backend received and return it (maybe
  normalised) or raise :class:`ValidationError` naming the field and the reason.
* :func:`sanitize` makes any text one safe line: control characters, line
  separators and terminal escape sequences become visible escapes such as
  ``\\n`` and ``\\x1b``.  :func:`safe_filename` turns a name into one safe
  file name.
* :class:`Redactor` removes secrets: by key (``password=...``, ``{"token": ...}``)
  and by the shape of the value (JWTs, cloud and chat tokens, private keys,
  passwords in URLs, card numbers).  Removed text becomes a marker that names
  what was there: ``[REDACTED:jwt]``, ``[REDACTED:password]``.
* :func:`hash_identifier`, :func:`constant_time_equals`, :func:`random_token`.

The prefilter contract
----------------------
Redaction runs on the log call's hot path, so a cheap test,
:func:`might_contain_secret`, decides whether a text needs the full pass.  The C
ring applies the same rule to the encoded record, so the rule is part of the
API and must stay exactly this:

``might_contain_secret(text)`` is true iff

(a) the text, with ASCII letters lowercased, contains one of
    :data:`PREFILTER_TOKENS`; or
(b) it holds a run of characters drawn from ``0-9``, space and ``-`` with at
    least 13 digits in it; or
(c) it holds ``://`` followed by ``@`` before the next ASCII white-space
    character (space, ``\\t``, ``\\n``, ``\\v``, ``\\f``, ``\\r``).

Guarantee: when it is false, :meth:`Redactor.redact_text` returns the text
unchanged.  Every pattern below is written so that a match implies one of
(a)-(c); the tests check this with property-based tests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import itertools
import math
import os
import re
import secrets
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .error_handling.api.errors import ValidationError
from .error_handling.utils.errors import ConfigError

__all__ = [
    "DEFAULT_REDACTOR",
    "DEFAULT_SENSITIVE_KEYS",
    "HASH_KEY_ENV",
    "PREFILTER_TOKENS",
    "Redactor",
    "constant_time_equals",
    "hash_identifier",
    "hash_key_from_env",
    "is_sensitive_key",
    "might_contain_secret",
    "random_hex",
    "random_token",
    "redact_text",
    "redact_value",
    "safe_filename",
    "sanitize",
    "validate_choice",
    "validate_email",
    "validate_identifier",
    "validate_int",
    "validate_payload",
    "validate_string",
    "validate_uuid",
]

# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------
#
# Messages never repeat the rejected value: they are logged and sent back to
# callers, and the value may itself be a secret or hold control characters.


def _reject(field: str, reason: str) -> ValidationError:
    return ValidationError(field=field, reason=reason)


def _type_name(value: object) -> str:
    return type(value).__name__


def _require_str(value: object, field: str, what: str = "a string") -> str:
    if not isinstance(value, str):
        raise _reject(field, f"must be {what}, got {_type_name(value)}")
    return value


_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", re.ASCII)


def validate_identifier(value: object, *, field: str = "identifier", max_length: int = 64) -> str:
    """An ASCII name: letters, digits, ``_``, ``-`` and ``.``, starting with a letter or digit."""
    text = _require_str(value, field)
    if not text:
        raise _reject(field, "must not be empty; use letters, digits, '_', '-' or '.'")
    if len(text) > max_length:
        raise _reject(
            field, f"must be at most {max_length} characters, got {len(text)}; shorten it"
        )
    if _IDENTIFIER.fullmatch(text) is None:
        if not text[0].isascii() or not text[0].isalnum():
            raise _reject(field, "must start with an ASCII letter or digit")
        raise _reject(
            field, "may only hold ASCII letters, digits, '_', '-' and '.'; remove other characters"
        )
    return text


# A pragmatic subset of RFC 5322: a dot-atom local part (no quoted local parts)
# and an ASCII domain of at least two labels.
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def validate_email(value: object, *, field: str = "email") -> str:
    """An address ``local@domain.tld``; surrounding white space is dropped, the domain lowercased.

    Quoted local parts and internationalised domains are refused: the domain
    must be given in its ASCII (punycode) form.
    """
    text = _require_str(value, field).strip()
    if not text:
        raise _reject(field, "must not be empty; give an address like name@example.com")
    if len(text) > 254:
        raise _reject(field, f"must be at most 254 characters, got {len(text)}")
    if text.count("@") != 1:
        raise _reject(field, "must hold exactly one '@', as in name@example.com")
    local, domain = text.split("@")
    if not local or len(local) > 64 or not local.isascii() or not _EMAIL_LOCAL.fullmatch(local):
        raise _reject(
            field,
            "has an invalid part before '@': use 1-64 ASCII letters, digits or "
            "!#$%&'*+/=?^_`{|}~- separated by single dots",
        )
    labels = domain.split(".")
    if (
        len(labels) < 2
        or not domain.isascii()
        or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels)
        or labels[-1].isdigit()
    ):
        raise _reject(
            field,
            "has an invalid domain: use a name like example.com (ASCII letters, digits "
            "and '-', punycode for international names)",
        )
    return f"{local}@{domain.lower()}"


# Hyphens all four or none (the backreference), braces both or none.
_UUID = re.compile(
    r"(?:urn:uuid:)?(\{)?"
    r"([0-9a-f]{8}(-?)[0-9a-f]{4}\3[0-9a-f]{4}\3[0-9a-f]{4}\3[0-9a-f]{12})"
    r"(?(1)\})",
    re.ASCII | re.IGNORECASE,
)


def validate_uuid(value: object, *, field: str = "id", version: int | None = None) -> str:
    """A UUID in any common spelling, returned in canonical lowercase ``8-4-4-4-12`` form.

    Accepted: hyphenated, 32 bare hex digits, in braces or with ``urn:uuid:``.
    With *version*, the UUID must be of that version (e.g. 4).
    """
    if isinstance(value, uuid.UUID):
        parsed = value
    else:
        text = _require_str(value, field, "a UUID string")
        match = _UUID.fullmatch(text.strip())
        hex_digits = match.group(2).replace("-", "") if match else ""
        if len(hex_digits) != 32:
            raise _reject(
                field,
                "must be a UUID like 123e4567-e89b-12d3-a456-426614174000 (32 hex digits, "
                "hyphens optional)",
            )
        parsed = uuid.UUID(hex=hex_digits)
    if version is not None and parsed.version != version:
        raise _reject(field, f"must be a version {version} UUID, got version {parsed.version}")
    return str(parsed)


# Control characters other than tab, newline and carriage return have no place
# in text a user typed; NUL in particular truncates strings in C APIs.
_BAD_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def validate_string(
    value: object,
    *,
    field: str = "value",
    min_length: int = 0,
    max_length: int = 1024,
    pattern: str | re.Pattern[str] | None = None,
    strip: bool = False,
) -> str:
    """A string of *min_length* to *max_length* characters, matching *pattern* in full if given.

    With ``strip=True`` surrounding white space is removed first and the
    stripped text is checked and returned.  Control characters other than tab,
    newline and carriage return are refused.
    """
    if min_length < 0 or max_length < min_length:
        raise ValueError(f"need 0 <= min_length <= max_length, got {min_length} and {max_length}")
    text = _require_str(value, field)
    if strip:
        text = text.strip()
    if len(text) < min_length:
        if min_length == 1:
            raise _reject(field, "must not be empty")
        raise _reject(field, f"must be at least {min_length} characters, got {len(text)}")
    if len(text) > max_length:
        raise _reject(
            field, f"must be at most {max_length} characters, got {len(text)}; shorten it"
        )
    if _BAD_CONTROL.search(text):
        raise _reject(field, "must not contain control characters; remove them")
    if pattern is not None:
        compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
        if compiled.fullmatch(text) is None:
            raise _reject(field, f"must match the pattern {compiled.pattern!r}")
    return text


_INT_TEXT = re.compile(r"[+-]?[0-9]{1,40}", re.ASCII)


def validate_int(
    value: object, *, field: str = "value", min: int | None = None, max: int | None = None
) -> int:
    """A whole number (an ``int`` or a decimal string such as ``"42"``) within [*min*, *max*].

    ``True``/``False`` and floats are refused, even ``3.0``.
    """
    if isinstance(value, bool):
        raise _reject(field, "must be a whole number, not true/false")
    if isinstance(value, int):
        number = int(value)
    elif isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text) is None:
            raise _reject(field, "must be a whole number written with digits, like 42 or -7")
        number = int(text)
    elif isinstance(value, float):
        raise _reject(field, "must be a whole number, not a decimal; send 3 rather than 3.0")
    else:
        raise _reject(field, f"must be a whole number, got {_type_name(value)}")
    if min is not None and number < min:
        raise _reject(field, f"must be at least {min}, got {number}")
    if max is not None and number > max:
        raise _reject(field, f"must be at most {max}, got {number}")
    return number


def validate_choice(value: object, choices: Iterable[Any], *, field: str = "value") -> Any:
    """One of *choices* (compared with ``==``, ``True`` never standing in for ``1``); returns it."""
    options = tuple(choices)
    if not options:
        raise ValueError("validate_choice needs at least one choice")
    for option in options:
        try:
            if isinstance(option, bool) is isinstance(value, bool) and option == value:
                return option
        except Exception:  # an odd __eq__ is simply not a match
            continue
    shown = ", ".join(repr(option) for option in options[:20])
    if len(options) > 20:
        shown += f", ... ({len(options)} in all)"
    raise _reject(field, f"must be one of: {shown}")


_JSON_SCALARS = (str, int, float, bool, type(None))


def validate_payload(
    obj: object,
    *,
    field: str = "payload",
    max_depth: int = 32,
    max_items: int = 10_000,
    max_string: int = 65_536,
) -> Any:
    """A JSON-like payload: dicts with string keys, lists, str, int, float, bool and None.

    Bounded: nesting at most *max_depth* containers deep, at most *max_items*
    values in all, every string and key at most *max_string* characters, no
    NaN or infinity.  Returns *obj* itself.  The error's field is the path to
    the first bad value, e.g. ``payload.items[3].name``.
    """
    # Depth-first with an explicit stack: the caller may allow deep payloads
    # and Python's recursion limit must not decide.  A payload that refers to
    # itself is infinitely deep, so the depth bound also ends cycles.
    stack: list[tuple[object, str, int]] = [(obj, field, 0)]
    count = 0
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if len(value) > max_string:
                raise _reject(
                    path, f"string is {len(value)} characters, more than the {max_string} allowed"
                )
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                raise _reject(path, "must be a finite number; NaN and infinity are not JSON")
            continue
        if isinstance(value, _JSON_SCALARS):
            continue
        if not isinstance(value, (dict, list)):
            raise _reject(
                path,
                f"has a {_type_name(value)}; only objects, arrays, strings, numbers, "
                "booleans and null are allowed",
            )
        if depth >= max_depth:
            raise _reject(
                path, f"is nested more than {max_depth} levels deep (or refers to itself)"
            )
        count += len(value)
        if count > max_items:
            raise _reject(field, f"holds more than {max_items} values; send a smaller payload")
        if isinstance(value, dict):
            children = []
            for key, child in value.items():
                if not isinstance(key, str):
                    raise _reject(
                        path, f"has a key of type {_type_name(key)}; keys must be strings"
                    )
                if len(key) > max_string:
                    raise _reject(path, f"has a key longer than {max_string} characters")
                children.append((child, _child_path(path, key), depth + 1))
            stack.extend(reversed(children))
        else:
            stack.extend(
                (child, f"{path}[{index}]", depth + 1)
                for index, child in reversed(list(enumerate(value)))
            )
    return obj


def _child_path(path: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key) and len(key) <= 64:
        return f"{path}.{key}"
    return f"{path}[{sanitize(key[:64])!r}]"


# ---------------------------------------------------------------------------
# Sanitising
# ---------------------------------------------------------------------------
#
# sanitize() escapes but never escapes the backslash itself.  Escaping it would
# make the output unambiguous but not idempotent (every pass would double the
# backslashes), and records pass through it more than once (message, then
# terminal).  The price: a literal two-character "\n" in the input reads the
# same as an escaped newline.  What matters here, that no record spans two
# lines and no escape sequence reaches a terminal, holds either way.


def _build_escapes() -> dict[int, str]:
    table: dict[int, str] = {}
    for code in itertools.chain(range(0x00, 0x20), [0x7F], range(0x80, 0xA0)):
        table[code] = f"\\x{code:02x}"
    table[0x09] = "\\t"
    table[0x0A] = "\\n"
    table[0x0D] = "\\r"
    # Unicode line and paragraph separators end a line for many readers, and
    # bidi overrides/isolates can make a log line read differently than it is
    # stored ("Trojan Source", CVE-2021-42574).
    for code in itertools.chain([0x2028, 0x2029], range(0x202A, 0x202F), range(0x2066, 0x206A)):
        table[code] = f"\\u{code:04x}"
    # A lone surrogate cannot be written as UTF-8 and would make the write fail.
    for code in range(0xD800, 0xE000):
        table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _build_escapes()
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def sanitize(text: str) -> str:
    """*text* as one safe line: control characters and line breaks become visible escapes.

    Escaped: every C0 control (``\\t``, ``\\n``, ``\\r`` by name, the others as
    ``\\xNN``), DEL and the C1 controls (``\\x7f``, ``\\x9b``, ...), U+2028/U+2029,
    the bidi override and isolate characters and lone surrogates (``\\uNNNN``).
    Escaping ESC (``\\x1b``) and CSI (``\\x9b``) leaves any ANSI sequence as
    harmless visible text.  Backslashes are kept as they are, so
    ``sanitize(sanitize(x)) == sanitize(x)``.  Other text, any script or emoji,
    is unchanged.
    """
    if not isinstance(text, str):
        text = str(text)
    if _UNSAFE.search(text) is None:
        return text
    return text.translate(_ESCAPES)


# Names Windows reserves for devices, whatever the extension.
_RESERVED_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + [f"{prefix}{n}" for prefix in ("COM", "LPT") for n in "0123456789¹²³"]
)
_FILENAME_FORBIDDEN = re.compile(r'[<>:"|?*]')
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def safe_filename(name: object, *, field: str = "filename", max_length: int = 255) -> str:
    """*name* made into one safe file name, or ValidationError if nothing usable is left.

    Unicode is NFKC-normalised first (so a full-width ``／`` is a slash).  Path
    separators split the name into parts; empty, ``.`` and ``..`` parts are
    dropped and the rest joined with ``_`` (``../../etc/passwd`` gives
    ``etc_passwd``).  Control and invisible format characters are removed,
    ``< > : " | ? *`` become ``_``, leading dots, dashes and spaces and
    trailing dots and spaces are stripped, Windows device names get a ``_``
    prefix (``con.txt`` gives ``_con.txt``) and the result is cut to
    *max_length* UTF-8 bytes, keeping a short extension.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    text = _require_str(name, field)
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) not in _DROPPED_CATEGORIES)
    parts = [part for part in re.split(r"[/\\]", text) if part not in ("", ".", "..")]
    text = _FILENAME_FORBIDDEN.sub("_", "_".join(parts))
    text = text.lstrip(". -").rstrip(". ")
    stem = text.split(".", 1)[0].rstrip(" ").upper()
    if stem in _RESERVED_NAMES:
        text = "_" + text
    if len(text.encode("utf-8")) > max_length:
        text = _truncate_filename(text, max_length).rstrip(". ")
    if not text:
        raise _reject(
            field,
            "has no usable characters once path parts, control characters and leading "
            "dots are removed; use a name with letters or digits",
        )
    return text


def _truncate_filename(text: str, max_bytes: int) -> str:
    stem, dot, ext = text.rpartition(".")
    if not dot or not stem or len(ext) > 16 or len((dot + ext).encode("utf-8")) >= max_bytes:
        stem, ext, dot = text, "", ""
    budget = max_bytes - len((dot + ext).encode("utf-8"))
    # Cut on bytes, then drop a partial last character.
    cut = stem.encode("utf-8")[:budget].decode("utf-8", errors="ignore")
    return cut + dot + ext


# ---------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------

DEFAULT_SENSITIVE_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "passphrase",
        "secret",
        "client_secret",
        "secret_key",
        "secret_access_key",  # also covers aws_secret_access_key
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "auth_token",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "set_cookie",
        "session",
        "session_id",
        "sessionid",
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

# Text that starts each value pattern below; see the module docstring.
_PATTERN_TOKENS: tuple[str, ...] = (
    "-----begin",  # PEM private key
    "akia",  # AWS access key id
    "asia",  # AWS temporary access key id
    "basic ",  # Authorization: Basic
    "bearer",  # Authorization: Bearer
    "eyj",  # JWT ('{"' in base64url)
    "ghp_",  # GitHub tokens
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",  # Slack tokens
)

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


def _derive_prefilter_tokens(
    words: Iterable[str], pattern_tokens: Iterable[str]
) -> tuple[str, ...]:
    """The fewest substrings such that every spelling of every key word contains one."""
    words = sorted(set(words))
    candidates = set(pattern_tokens)
    candidates.update(word for word in words if "_" not in word)
    singles = set(candidates)
    for word in words:
        if "_" not in word:
            continue
        parts = word.split("_")
        # A token inside one of the word's parts is in every spelling of it.
        if any(token in part for token in singles for part in parts):
            continue
        if len(parts) <= 3:
            for seps in itertools.product(_KEY_SEPARATORS, repeat=len(parts) - 1):
                candidates.add(parts[0] + "".join(s + p for s, p in zip(seps, parts[1:])))
        else:
            # Too many spellings to list; the longest part appears in all of them.
            candidates.add(max(parts, key=len))
    kept: list[str] = []
    for token in sorted(candidates, key=lambda t: (len(t), t)):
        # A token that contains a kept one can never be the only match.
        if not any(shorter in token for shorter in kept):
            kept.append(token)
    return tuple(sorted(kept))


_DIGIT_RUN = re.compile(r"[0-9](?:[ \-]*+[0-9]){12}")
# Rule (c) in linear time: only the first "://" of a stretch without white
# space matters (an '@' after a later one is after the first one too), so
# start at each stretch and commit, atomically, to its first "://".
_URL_AT = re.compile(r"(?<![^ \t\n\r\x0b\x0c])(?>[^ \t\n\r\x0b\x0c]*?://)[^ \t\n\r\x0b\x0c@]*+@")


def _prefilter(text: str, tokens: tuple[str, ...]) -> bool:
    if text.isascii():
        low = text.lower()
        for token in tokens:
            if token in low:
                return True
    else:
        # bytes.lower() folds ASCII letters only, as the rule says; the
        # tokens are ASCII, so a match in the UTF-8 bytes is a match in the text.
        data = text.encode("utf-8", errors="surrogatepass").lower()
        for token in tokens:
            if token.encode("ascii") in data:
                return True
    if _DIGIT_RUN.search(text) is not None:
        return True
    return "://" in text and _URL_AT.search(text) is not None


# -- value patterns ---------------------------------------------------------
#
# Each is compiled with re.ASCII so that \s, \b and IGNORECASE mean exactly
# what the prefilter assumes.  Where a pattern could start at every character
# of a long run, a look-behind makes it start only at the run's beginning, so
# that the scan stays linear on hostile input.

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
_AWS_KEY = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", _A)
_GITHUB_TOKEN = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,}|(?<![A-Za-z0-9_])github_pat_[A-Za-z0-9_]{20,}", _A
)
_SLACK_TOKEN = re.compile(
    r"(?<![A-Za-z0-9\-])xox[abprse](?:\.xox[abprse])?-[0-9]+-[A-Za-z0-9\-]+", _A
)
# Runs of digit groups joined by single spaces or dashes, not inside a word, a
# hex string or a decimal.  _sub_card looks inside each run for card numbers.
_DIGIT_GROUPS = re.compile(r"(?<![0-9A-Za-z_.])[0-9]++(?:[ \-][0-9]++)*+", _A)
_GROUP_SPLIT = re.compile(r"[ \-]")

# key=value, key: value, "key": "value", 'key': 'value', key => value.
_PAIR_KEY = re.compile(
    r"""
    (?:
        (?P<q>\\?["'])(?P<qkey>[A-Za-z0-9_.\- ]{1,128})(?P=q)      # "key", 'key', \"key\"
      | (?<![A-Za-z0-9_.\-])(?<!//)(?P<key>[A-Za-z0-9_.\-]{1,128})  # key; not a URL's user
    )
    [ \t]*(?:=>|:=|[:=])[ \t]*
    """,
    _A | re.VERBOSE,
)
# The value: quoted (the quotes stay), braced as in ODBC's PWD={...}, a JSON
# scalar, or a bare word running to white space, a quote, ',', ';' or '&'.
# Brackets do not end a bare word: a password may hold them, and losing a
# closing brace of the surrounding text is better than leaking its tail.
_PAIR_VALUE = re.compile(
    r"""
    (?P<scheme>(?:bearer|basic|digest|token|negotiate|ntlm)[ \t]+(?=\S))?
    (?:
        \\"(?P<v1>(?:(?!\\")[^\r\n])*)(?:\\")?
      | "(?P<v2>(?:[^"\\\r\n]|\\.)*)"?
      | '(?P<v3>(?:[^'\\\r\n]|\\.)*)'?
      | \{(?P<v4>[^}\r\n]*)\}?
      | (?P<v5>(?:-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|null|true|false)(?=[\s,;&}\])]|\Z))
      | (?P<v6>[^\s"',;&]+)
    )
    """,
    _AI | re.VERBOSE,
)
_VALUE_GROUPS = ("v1", "v2", "v3", "v4", "v5", "v6")


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
    groups = _GROUP_SPLIT.split(run)
    next_char = after[:1]
    if (next_char.isascii() and (next_char.isalpha() or next_char == "_")) or (
        next_char == "." and after[1:2].isdigit()
    ):
        # The last group runs into a word or a decimal: not part of a card.
        groups.pop()
    starts = []
    offset = 0
    for group in groups:
        starts.append(offset)
        offset += len(group) + 1
    out: list[str] = []
    done = 0
    i = 0
    while i < len(groups):
        best = -1
        if "2" <= groups[i][0] <= "6" and len(groups[i]) >= 4:
            digits = ""
            for j in range(i, len(groups)):
                if j > i and len(groups[j]) < 3:
                    break
                digits += groups[j]
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and _luhn_valid(digits):
                    best = j
        if best < 0:
            i += 1
            continue
        out.append(run[done : starts[i]])
        out.append(_marker("card"))
        done = starts[best] + len(groups[best])
        i = best + 1
    if not out:
        return run
    out.append(run[done:])
    return "".join(out)


def _sub_url(match: re.Match[str]) -> str:
    if _MARKER.fullmatch(match.group("secret")):
        return match.group(0)
    return match.group("prefix") + _marker("url_password")


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


_VALUE_PASSES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str] | str], ...] = (
    # Whole private keys first: they span lines and hold base64 the others could nibble.
    (_PEM, _marker("private_key")),
    (_URL_CREDENTIALS, _sub_url),
    (_JWT, _marker("jwt")),
    (_BEARER, _sub_bearer),
    (_BASIC, _sub_basic),
    (_AWS_KEY, _marker("aws_key")),
    (_GITHUB_TOKEN, _marker("github_token")),
    (_SLACK_TOKEN, _marker("slack_token")),
    (_DIGIT_GROUPS, _sub_card),
)

# Enough for any text seen in testing to settle after two; a bound in case.
_MAX_ROUNDS = 8


class Redactor:
    """Removes secrets from log text and fields; configured once, used on every log call.

    *keys* are the key words whose values are secret (default
    :data:`DEFAULT_SENSITIVE_KEYS`), *extra_keys* adds to them.  Words are
    normalised like keys: ``"X-Api-Key"`` becomes ``x_api_key``.  With
    ``patterns=False`` only values under sensitive keys are redacted, not
    JWTs, tokens, card numbers and the like found elsewhere in text.

    Safe to share between threads: the only state that changes is the key
    cache, a dict that is only ever added to or cleared.
    """

    def __init__(
        self,
        keys: Iterable[str] = DEFAULT_SENSITIVE_KEYS,
        extra_keys: Iterable[str] = (),
        patterns: bool = True,
    ) -> None:
        words: set[str] = set()
        for source, name in ((keys, "keys"), (extra_keys, "extra_keys")):
            if isinstance(source, (str, bytes)):
                raise ConfigError(f"{name} must be a list of key names, not a single string")
            for word in source:
                words.add(self._check_word(word, name))
        self._keys = frozenset(words)
        self._patterns = bool(patterns)
        self._key_tokens = _derive_prefilter_tokens(self._keys, ())
        self._tokens = _derive_prefilter_tokens(
            self._keys, _PATTERN_TOKENS if self._patterns else ()
        )
        self._key_cache: dict[str, str | None] = {}

    @staticmethod
    def _check_word(word: object, name: str) -> str:
        if not isinstance(word, str):
            raise ConfigError(f"{name} must hold strings, got {_type_name(word)}")
        normal = _normalise_word(word)
        # "redacted" would make every marker look like a pair and match itself.
        usable = re.fullmatch(r"[a-z0-9_]+", normal, re.ASCII) is not None
        if not usable or len(normal) < 2 or normal == "redacted":
            raise ConfigError(
                f"{name} entry {word!r} is not usable: use 2 or more ASCII letters, digits, "
                "'_', '-' or '.', like 'pin_code'"
            )
        return normal

    def __repr__(self) -> str:
        return f"Redactor(keys={len(self._keys)}, patterns={self._patterns})"

    @property
    def keys(self) -> frozenset[str]:
        """The normalised key words this redactor treats as sensitive."""
        return self._keys

    @property
    def patterns(self) -> bool:
        """Whether value patterns (JWTs, tokens, cards, ...) are redacted as well as keys."""
        return self._patterns

    @property
    def prefilter_tokens(self) -> tuple[str, ...]:
        """The lowercase ASCII substrings of rule (a) of the prefilter, for this key set."""
        return self._tokens

    # -- keys ---------------------------------------------------------------

    def key_class(self, key: object) -> str | None:
        """The key word that makes *key* sensitive (``"password"`` for ``DB-Password``), or None.

        Matching is ASCII case-insensitive; ``-``, ``.``, space and camelCase
        boundaries count as ``_``.  A key is sensitive if it is one of the words
        or ends with ``_`` and one of them: ``github_token`` and ``set-cookie``
        are, ``token_count``, ``monkey`` and ``keyboard`` are not.
        """
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
        words = self._keys
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
        """The prefilter (see the module docstring) with this redactor's tokens."""
        return _prefilter(text, self._tokens)

    def redact_text(self, text: str) -> str:
        """*text* with every secret replaced by a ``[REDACTED:<kind>]`` marker.

        Idempotent: markers never match, so redacting twice changes nothing
        more.  Text the prefilter passes comes back as the same object.
        """
        if type(text) is not str:
            if not isinstance(text, str):
                raise TypeError(f"redact_text needs a str, got {_type_name(text)}")
            text = str.__str__(text)
        if not _prefilter(text, self._tokens):
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
        return self._redact_pairs(text)

    def _redact_pairs(self, text: str) -> str:
        search = _PAIR_KEY.search
        match = search(text)
        if match is None:
            return text
        out: list[str] = []
        done = 0
        while match is not None:
            key = match.group("key") or match.group("qkey")
            kind = self.key_class(key)
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
            if secret and _MARKER.fullmatch(secret) is None:
                out.append(text[done : value.start(group)])
                out.append(_marker(kind))
                done = value.end(group)
            match = search(text, max(value.end(), match.end()))
        if not out:
            return text
        out.append(text[done:])
        return "".join(out)

    # -- structured values ---------------------------------------------------

    def redact_value(self, obj: Any) -> Any:
        """A copy of *obj* with secrets removed; never raises and never changes *obj*.

        dicts, lists, tuples, sets and frozensets are copied (subclasses come
        back as the plain type); any value under a sensitive key becomes
        ``"[REDACTED:<kind>]"``; strings, keys included, go through
        :meth:`redact_text`; other objects are returned as they are.  A
        container that contains itself gives ``"[cycle]"``, one nested deeper
        than 32 levels ``"[depth limit]"``, one that fails while being read
        ``"[unredactable]"``.
        """
        try:
            return self._redact_obj(obj, 0, set())
        except Exception:
            return _UNREDACTABLE

    def _redact_obj(self, obj: Any, depth: int, active: set[int]) -> Any:
        if isinstance(obj, str):
            return self.redact_text(obj)
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
                for key, value in list(dict.items(obj)):
                    kind = self.key_class(key)
                    if kind is not None:
                        value = _marker(kind)
                    else:
                        value = self._redact_obj(value, depth + 1, active)
                    if isinstance(key, str):
                        key = self.redact_text(key)
                    out[key] = value
                return out
            items = [self._redact_obj(item, depth + 1, active) for item in obj]
            if isinstance(obj, list):
                return items
            if isinstance(obj, tuple):
                return tuple(items)
            if isinstance(obj, frozenset):
                return frozenset(items)
            return set(items)
        except Exception:
            return _UNREDACTABLE
        finally:
            active.discard(ident)


DEFAULT_REDACTOR = Redactor()
"""The redactor the module-level functions use: default keys, value patterns on."""

PREFILTER_TOKENS: tuple[str, ...] = DEFAULT_REDACTOR.prefilter_tokens
"""Rule (a) of the prefilter for the default key set: lowercase ASCII substrings."""

is_sensitive_key = DEFAULT_REDACTOR.is_sensitive_key
redact_text = DEFAULT_REDACTOR.redact_text
redact_value = DEFAULT_REDACTOR.redact_value


def might_contain_secret(text: str) -> bool:
    """True if *text* may hold a secret by the default rule; False means redaction can be skipped.

    The exact rule is in the module docstring; a C port applies it to UTF-8
    bytes and must agree with this function.
    """
    return _prefilter(text, PREFILTER_TOKENS)


# ---------------------------------------------------------------------------
# Hashing and tokens
# ---------------------------------------------------------------------------

HASH_KEY_ENV = "JANUS_LOG_HASH_KEY"


def hash_identifier(value: object, key: str | bytes, *, length: int = 16) -> str:
    """A keyed, stable pseudonym for *value*: HMAC-SHA256 in hex, cut to *length* characters.

    The same value and key always give the same result, so records about one
    user still group together; without the key the value cannot be recovered
    by hashing guesses.  *value* may be str (hashed as UTF-8), bytes, or
    anything else (hashed as ``str(value)``).  *length* is 8 to 64.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 8 <= length <= 64:
        raise ConfigError(f"hash length must be a whole number from 8 to 64, got {length!r}")
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise ConfigError(f"hash key must be str or bytes, got {_type_name(key)}")
    if not key:
        raise ConfigError(
            f"hash key is empty: pass a secret key (e.g. from random_token()) or set {HASH_KEY_ENV}"
        )
    if isinstance(value, str):
        data = value.encode("utf-8", errors="surrogatepass")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        data = str(value).encode("utf-8", errors="surrogatepass")
    return hmac.new(bytes(key), data, hashlib.sha256).hexdigest()[:length]


def hash_key_from_env(environ: Mapping[str, str] | None = None) -> bytes | None:
    """The key in ``JANUS_LOG_HASH_KEY`` as UTF-8 bytes, or None if it is unset or empty."""
    value = (os.environ if environ is None else environ).get(HASH_KEY_ENV, "")
    return value.encode("utf-8") if value else None


def constant_time_equals(a: str | bytes, b: str | bytes) -> bool:
    """``a == b`` in time that does not depend on where they differ (for tokens, MACs).

    str is compared as UTF-8; anything but str or bytes is never equal.
    """
    if isinstance(a, str):
        a = a.encode("utf-8", errors="surrogatepass")
    if isinstance(b, str):
        b = b.encode("utf-8", errors="surrogatepass")
    if not isinstance(a, (bytes, bytearray)) or not isinstance(b, (bytes, bytearray)):
        return False
    return hmac.compare_digest(a, b)


def _check_nbytes(nbytes: int) -> None:
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 16:
        raise ValueError(f"nbytes must be at least 16 (128 bits) to be unguessable, got {nbytes!r}")


def random_token(nbytes: int = 32) -> str:
    """A random URL-safe token of *nbytes* random bytes (43 characters for 32), for keys and ids."""
    _check_nbytes(nbytes)
    return secrets.token_urlsafe(nbytes)


def random_hex(nbytes: int = 16) -> str:
    """*nbytes* random bytes as lowercase hex (32 characters for 16)."""
    _check_nbytes(nbytes)
    return secrets.token_hex(nbytes)
