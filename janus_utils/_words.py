"""The per-row word signature: what the "words" column holds, and how a search tests it.

A row's "words" has one bit set for each distinct token of its indexed text
(message, fields, exception), as FTS5's unicode61 tokenizer splits and folds
ASCII text: runs of ASCII letters and digits, lowercased.  A token sets bit
``word_bit(token)`` of 32, stored as a signed 32-bit integer.  A row whose
text the signature cannot describe exactly (a character past ASCII, which
unicode61 may fold to an ASCII token; a NUL; a blob or a number) holds -1,
every bit, as does a row whose text was edited after it was stored (a
trigger, see _schema); a row stored before the column existed holds NULL.
Both pass every test.

So every row that holds a search's plain ASCII words as tokens has each
word's bit set: ``"words" IS NULL OR "words" & mask = mask`` is a necessary
condition for a match, and it is in the user index, so a search led by a
user rejects most of the user's rows without reading them (about 1 µs each).
The flusher and archive import compute it in C, a batch at a time (the
flusher as it decodes the ring's records, ``_speedups.decode_rows``; otherwise
``_speedups.sign_rows``); without the extension they store NULL.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["COLUMN", "condition", "mask", "signature", "word_bit"]

COLUMN = "words"

_FNV_START = 2166136261
_FNV_PRIME = 16777619
_MIX = 2654435761
_MASK32 = 0xFFFFFFFF


def word_bit(token: str) -> int:
    """The bit (an unsigned 32-bit value) of one lowercase ASCII token: _speedups' WORD_BIT."""
    h = _FNV_START
    for byte in token.encode("ascii"):
        h = ((h ^ byte) * _FNV_PRIME) & _MASK32
    return 1 << (((h * _MIX) & _MASK32) >> 27)


def _signed(bits: int) -> int:
    return bits - (1 << 32) if bits & (1 << 31) else bits


def mask(tokens: Iterable[str]) -> int:
    """The signed mask a row's signature must cover to hold every one of *tokens*; 0 for none."""
    bits = 0
    for token in tokens:
        bits |= word_bit(token)
    return _signed(bits)


def signature(*texts: object) -> int:
    """What sign_rows stores for a row with these column values (the reference, for tests)."""
    bits = 0
    for text in texts:
        if text is None:
            continue
        if type(text) is not str or not text.isascii() or "\0" in text:
            return -1
        token: list[str] = []
        for char in text.lower() + " ":
            if char.isascii() and char.isalnum():
                token.append(char)
            elif token:
                bits |= word_bit("".join(token))
                token = []
    return _signed(bits)


def condition(row: str, bits: int) -> str:
    """SQL: the row of *row* (a quoted table name or alias) may hold the tokens of *bits* (mask())."""
    # An int written into the text: a plan SQLite can see, no parameter to thread through.
    return f'({row}."{COLUMN}" IS NULL OR {row}."{COLUMN}" & {int(bits)} = {int(bits)})'
