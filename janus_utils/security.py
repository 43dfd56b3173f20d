"""Keep secrets and hostile input out of the logs: validation, sanitising, redaction, hashing.

Four groups of helpers, all pure Python and standard library only:

* ``validate_*`` check a value a backend received and return it (maybe
  normalised) or raise :class:`ValidationError` naming the field and the reason.
* :func:`sanitize` makes any text one safe line: control characters, line
  separators and terminal escape sequences become visible escapes such as
  ``\\n`` and ``\\x1b``.  :func:`safe_filename` turns a name into one safe
  file name.
* :class:`Redactor` removes secrets: by key (``password=...``, ``{"token": ...}``,
  ``("Authorization", ...)`` pairs, ``--password VALUE``) and by the shape of
  the value (JWTs, cloud, payment, AI and chat tokens, private keys, passwords
  in URLs and connection strings, card numbers in text and as int fields).
  Removed text becomes a marker that names what was there:
  ``[REDACTED:jwt]``, ``[REDACTED:password]``.  Personal data (e-mail
  addresses, IBANs, SSNs) only with ``Redactor(pii=True)``.
* :func:`hash_identifier`, :func:`constant_time_equals`, :func:`random_token`.

The prefilter contract
----------------------
Redaction runs on the log call's hot path, so a cheap test,
:func:`might_contain_secret`, decides whether a text needs the full pass.  The C
ring applies the same rule to each string of the encoded record, so the rule
is part of the API and must stay exactly this:

``might_contain_secret(text)`` is true iff

(a) the text, with ASCII letters lowercased, contains one of
    :data:`PREFILTER_TOKENS`.  A token written ``^tok`` counts only where it
    starts a word (the character before it, if any, is not an ASCII letter or
    digit); one written ``tok$`` only where it ends a key word: what may
    follow a key comes right after it (space, tab, ``=``, ``:``, ``"``,
    ``'``, ``\\``, ``_``, ``-`` or ``.``), or, when the text is a key of its
    own (a dict key, the name of a header pair), the text ends there; or
(b) it holds a run of characters drawn from ``0-9``, space, tab, ``-`` and
    ``.`` with at least 13 digits in it; or
(c) it holds ``/`` followed by ``@`` before the next ASCII white-space
    character (space, ``\\t``, ``\\n``, ``\\v``, ``\\f``, ``\\r``): credentials in
    a URL, Oracle's ``user/password@db``.

For a record (the C encoder, and the checked push of the Python path) one
rule more: (d) an int field value that :func:`is_card_number` accepts.

Guarantee: when it is false, :meth:`Redactor.redact_text` returns the text
unchanged.  Every pattern of the engine (``janus_utils._redact``, which this
module re-exports) is written so that a match implies one of (a)-(c); the
tests check this with property-based tests.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import math
import os
import re
import secrets
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from . import _redact
from ._redact import (
    DEFAULT_SENSITIVE_KEYS,
    DEFAULT_STATUS_KEYS,
    PII_KEYS,
    PREFILTER_TOKENS,
    is_card_number,
    might_contain_secret,
)
from .error_handling.api.errors import ValidationError
from .error_handling.utils.errors import ConfigError

__all__ = [
    "DEFAULT_REDACTOR",
    "DEFAULT_SENSITIVE_KEYS",
    "DEFAULT_STATUS_KEYS",
    "HASH_KEY_ENV",
    "PII_KEYS",
    "PREFILTER_TOKENS",
    "Redactor",
    "constant_time_equals",
    "hash_identifier",
    "hash_key_from_env",
    "is_card_number",
    "is_sensitive_key",
    "might_contain_secret",
    "quote",
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


# quote() escapes what sanitize() escapes, and the backslash and the quote too,
# in the spelling JSON, Go's strconv.Unquote and logfmt readers all decode:
# \t \n \r by name, every other character as \uNNNN (\xNN would be a byte to Go).
def _build_quote_escapes() -> dict[int, str]:
    table = {code: f"\\u{code:04x}" for code in _ESCAPES}
    table.update({0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"})
    return table


_QUOTE_ESCAPES = _build_quote_escapes()


def quote(text: str) -> str:
    """*text* in double quotes, as one safe line that decodes back to exactly *text*.

    Unlike sanitize(), the backslash is escaped (``\\\\``), and the quote
    (``\\"``), so a logged backslash-n and a logged newline read differently.
    No control character, line break or bidi character is left raw.  The
    escapes are JSON's: ``json.loads(quote(x)) == x`` for any text UTF-8 can
    hold (two lone surrogates in a row decode as the pair they spell).
    """
    return '"' + text.translate(_QUOTE_ESCAPES) + '"'


def logfmt_text(text: str) -> str:
    """*text* as a logfmt value: bare when it needs neither quotes nor escapes, else quote(text)."""
    if text and not any(c in text for c in ' ="\\') and sanitize(text) == text:
        return text
    return quote(text)


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
#
# The engine lives in janus_utils._redact, below janus_utils.error_handling,
# whose errors redact what they show with it; this module is its public face.


class Redactor(_redact.Redactor):
    __doc__ = _redact.Redactor.__doc__

    config_error = ConfigError


DEFAULT_REDACTOR = Redactor()
"""The redactor the module-level functions use: default keys, value patterns on."""

is_sensitive_key = DEFAULT_REDACTOR.is_sensitive_key
redact_text = DEFAULT_REDACTOR.redact_text
redact_value = DEFAULT_REDACTOR.redact_value


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
