"""The redaction engine: secrets found by key and by shape, replaced by ``[REDACTED:<kind>]``.

Standard library only and importing nothing else of janus_utils, so that
everything that redacts can stand on it: :mod:`janus_utils.security` re-exports
its public names (and documents the prefilter contract they follow), and
:mod:`janus_utils.error_handling` redacts what its errors show and log with it.

Its one error, :class:`RedactorConfigError`, is a ``ValueError``: this module
sits below the error hierarchy, whose errors redact themselves with it.  The
public class, :class:`janus_utils.security.Redactor`, names ``ConfigError``
as the error it raises instead (see ``Redactor.config_error``).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

__all__ = [
    "DEFAULT_REDACTOR",
    "DEFAULT_SENSITIVE_KEYS",
    "PREFILTER_TOKENS",
    "Redactor",
    "RedactorConfigError",
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
    Unusable settings raise :attr:`config_error` (``ConfigError`` for
    :class:`janus_utils.security.Redactor`), saying what to use instead.

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
    ) -> None:
        words: set[str] = set()
        for source, name in ((keys, "keys"), (extra_keys, "extra_keys")):
            if isinstance(source, (str, bytes)):
                raise self.config_error(f"{name} must be a list of key names, not a single string")
            for word in source:
                words.add(self._check_word(word, name))
        self._keys = frozenset(words)
        self._patterns = bool(patterns)
        self._key_tokens = _derive_prefilter_tokens(self._keys, ())
        self._tokens = _derive_prefilter_tokens(
            self._keys, _PATTERN_TOKENS if self._patterns else ()
        )
        self._key_cache: dict[str, str | None] = {}

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
