"""Which full-text queries a search's snippets can be made for from the rows' own text
(janus_utils._records.snippets), and their phrases as it takes them."""

from __future__ import annotations

import functools
import re
from typing import Any

from ._fts import _ASCII_WORD, _MAX_DEPTH

__all__ = ["snippet_phrases"]

# A query part of FTS5's expression syntax as read by snippet_phrases.
_SNIPPET_PART = re.compile(r'\s*(?:"((?:[^"]|"")*)"(\*?)|(\()|(\))|(AND|OR|NOT)(?=[\s"(]))')


@functools.lru_cache(maxsize=256)  # asked twice a search, of the few expressions a program sends
def snippet_phrases(fts: str) -> tuple[tuple[tuple[bytes, ...], bool, bool], ...] | None:
    """The phrases of the FTS5 expression *fts* as janus_utils._records.snippets takes them,
    (tokens, prefix, counted) in FTS5's order; None for an expression it cannot reproduce.

    Reproduced: quoted ASCII phrases (a prefix too) AND-ed (explicitly or
    side by side), OR-ed where each side is a phrase or phrases OR-ed, and
    NOT-ed where the excluded side is one phrase.  For those the row's
    instances are every place each phrase not excluded occurs.  Anything
    else (NEAR, column filters, barewords, ^, +, an excluded group, a phrase
    OR-ed with an AND) keeps FTS5's own snippet(): there an instance FTS5
    reports depends on how it stepped through the expression, not only on
    the row.
    """
    parts: list[tuple[str, Any]] = []
    position = 0
    while position < len(fts):
        found = _SNIPPET_PART.match(fts, position)
        if found is None:
            if fts[position:].strip():
                return None
            break
        position = found.end()
        text, star, left, right, keyword = found.groups()
        if text is not None:
            text = text.replace('""', '"')
            if not text.isascii():
                return None
            tokens = _ASCII_WORD.findall(text.lower())
            if not tokens or len(tokens) > 64 or max(len(token) for token in tokens) >= 32_000:
                return None  # FTS5 cuts tokens of 32,000 bytes and more (FTS5_MAX_TOKEN_SIZE)
            parts.append(("phrase", (tuple(token.encode() for token in tokens), bool(star))))
        elif left:
            parts.append(("(", None))
        elif right:
            parts.append((")", None))
        else:
            parts.append((keyword, None))
    phrases: list[tuple[tuple[bytes, ...], bool, bool]] = []
    at = depth = 0

    # FTS5's grammar: OR below AND below NOT below phrases side by side.  Each
    # parse returns the node's kind: "phrase", "or" (phrases OR-ed), "and", "not".
    def peek() -> str | None:
        return parts[at][0] if at < len(parts) else None

    def either() -> str:
        nonlocal at
        kinds = [both()]
        while peek() == "OR":
            at += 1
            kinds.append(both())
        if len(kinds) == 1:
            return kinds[0]
        if any(kind not in ("phrase", "or") for kind in kinds):
            raise ValueError("an OR of more than phrases")
        return "or"

    def both() -> str:
        nonlocal at
        kinds = [excluding()]
        while peek() == "AND":
            at += 1
            kinds.append(excluding())
        return kinds[0] if len(kinds) == 1 else "and"

    def excluding() -> str:
        nonlocal at
        kind = side_by_side()
        while peek() == "NOT":
            at += 1
            first = len(phrases)
            if side_by_side() != "phrase":
                raise ValueError("NOT of more than one phrase")
            phrases[first] = (phrases[first][0], phrases[first][1], False)
            kind = "not"
        return kind

    def side_by_side() -> str:
        nonlocal at, depth
        if peek() == "(":
            at += 1
            depth += 1
            if depth > _MAX_DEPTH:
                raise ValueError("nested too deep")
            kind = either()
            depth -= 1
            if peek() != ")":
                raise ValueError("unbalanced")
            at += 1
            return kind
        count = 0
        while peek() == "phrase":
            tokens, prefix = parts[at][1]
            phrases.append((tokens, prefix, True))
            at += 1
            count += 1
        if not count:
            raise ValueError("a phrase expected")
        return "phrase" if count == 1 else "and"

    try:
        either()
    except ValueError:
        return None
    if at != len(parts) or not phrases or len(phrases) > 64:
        return None
    return tuple(phrases)
