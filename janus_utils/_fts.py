"""Make user-typed search text a valid FTS5 query without quoting its syntax away.

People type log searches like web searches: ``timeout db-01``, ``user:42``,
``"connection reset" OR refused``, ``pay*``, ``can't``.  Raw FTS5 rejects half of
those (``-``, ``:``, ``'``, an unbalanced quote), and quoting the whole input
instead makes AND/OR/NOT, phrases and prefixes useless (the lesson of
sqlite-utils #246 and #265).  So the text is tokenized and parsed here:

* kept as FTS5 syntax: balanced ``"phrases"`` (``""`` inside is a quote),
  uppercase ``AND`` / ``OR`` / ``NOT`` between two operands, ``term*`` and
  ``"phrase"*`` prefixes, ``NEAR(a b, 5)`` groups, balanced ``( ... )`` groups,
  and ``column:term`` when *column* is one of the index's columns;
* quoted as a phrase: every other word, so ``db-01``, ``a:b``, ``^x``, ``c++``,
  ``'; DROP TABLE`` are searched as the words they contain;
* dropped: operators with nothing to join (``OR OR``, a leading ``NOT``), stray
  parentheses and quotes, and words with no letters or digits (``-``, ``*``).

The result is valid by construction; :func:`quote_all` is the fallback used if
SQLite still refuses it: every word a phrase, AND-ed together.

:func:`check_query_size` bounds what one search may ask of the index, raw or
not: a prefix term is a scan of every indexed word it begins (800 of them took
9.4 s on 200,000 records), and an 800 KB query ran for minutes.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

from .error_handling.utils.errors import SearchQueryError

__all__ = ["MAX_PREFIX_TERMS", "MAX_QUERY_CHARS", "MAX_QUERY_TERMS", "check_query_size", "escape_query", "quote_all"]

# What one search may ask of the index.  Measured on 200,000 records: a word
# costs a lookup (1,000 OR-ed words counted in 0.6 s), but a prefix term reads
# every indexed word it begins (35 ms each for "a*"), hence the small number;
# the statement timeout of LogStore is the backstop for the rest.
MAX_QUERY_CHARS = 10_000
MAX_QUERY_TERMS = 1_000
MAX_PREFIX_TERMS = 8

# Parentheses nested deeper than this are read as plain separators: FTS5 limits
# its own expression depth, and a recursive parser must not meet Python's.
_MAX_DEPTH = 32

_OPERATORS = frozenset({"AND", "OR", "NOT"})
# NUL ends an FTS5 query string early; other control characters are noise.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


# ---------------------------------------------------------------- tokens
@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "word", "string", "(", ")", ","
    text: str
    glued: bool  # no whitespace before it
    prefix: bool = False  # a string followed directly by *


def _clean(text: str) -> str:
    # Lone surrogates cannot be encoded for SQLite: "?" is a separator to FTS5.
    text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL.sub(" ", text)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    glued = False
    while i < n:
        char = text[i]
        if char.isspace():
            glued = False
            i += 1
            continue
        if char == '"':
            j, parts = i + 1, []
            while True:
                end = text.find('"', j)
                if end < 0:
                    break
                parts.append(text[j:end])
                if text.startswith('"', end + 1):  # "" is a quote inside a string
                    parts.append('"')
                    j = end + 2
                    continue
                break
            if end < 0:  # unbalanced: the quote is just a separator
                glued = False
                i += 1
                continue
            i = end + 1
            prefix = text.startswith("*", i)
            if prefix:
                i += 1
            tokens.append(_Token("string", "".join(parts), glued, prefix))
            glued = True
            continue
        if char in "(),":
            tokens.append(_Token(char, char, glued))
            glued = True
            i += 1
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] not in '"(),':
            j += 1
        tokens.append(_Token("word", text[i:j], glued))
        glued = True
        i = j
    return tokens


# ---------------------------------------------------------------- syntax tree
@dataclass(frozen=True, slots=True)
class _Phrase:
    text: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class _Near:
    phrases: tuple[_Phrase, ...]
    distance: int | None


@dataclass(frozen=True, slots=True)
class _Column:
    column: str
    node: _Node


@dataclass(frozen=True, slots=True)
class _Group:
    op: str  # "AND" or "OR"
    children: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Not:
    # a NOT b NOT c: kept flat so that long chains stay shallow for FTS5.
    positive: _Node
    negatives: tuple[_Node, ...]


_Node = _Phrase | _Near | _Column | _Group | _Not


def _has_token_chars(text: str) -> bool:
    # unicode61, FTS5's default tokenizer, keeps letters, numbers and private use
    # (categories L*, N*, Co); a phrase of nothing else is empty and an empty
    # phrase makes an AND match nothing.
    for char in text:
        category = unicodedata.category(char)
        if category[0] in "LN" or category == "Co":
            return True
    return False


def _phrase(text: str, prefix: bool = False) -> _Phrase | None:
    return _Phrase(text, prefix) if _has_token_chars(text) else None


def _word_phrase(word: str) -> _Phrase | None:
    if word.endswith("*"):
        stem = word.rstrip("*")
        if _has_token_chars(stem):
            return _Phrase(stem, prefix=True)
    return _phrase(word)


class _Parser:
    """Recursive descent over the tokens; never fails, drops what cannot be used."""

    def __init__(self, tokens: list[_Token], columns: Collection[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0
        self.columns = {column.lower(): column for column in columns}
        # Index of the ")" closing each "(", for those that are closed at all.
        self.closing: dict[int, int] = {}
        opened: list[int] = []
        for index, token in enumerate(tokens):
            if token.kind == "(":
                opened.append(index)
            elif token.kind == ")" and opened:
                self.closing[opened.pop()] = index

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def is_operator(self, token: _Token | None, *names: str) -> bool:
        return (
            token is not None
            and token.kind == "word"
            and token.text in _OPERATORS
            and (not names or token.text in names)
        )

    def parse(self) -> _Node | None:
        nodes: list[_Node] = []
        while self.pos < len(self.tokens):
            node = self.parse_or()
            if node is not None:
                nodes.append(node)
            if self.pos < len(self.tokens):  # a stray ")" stopped parse_or
                self.pos += 1
        return _group("AND", nodes)

    def parse_or(self) -> _Node | None:
        children = [self.parse_and()]
        while self.is_operator(self.peek(), "OR"):
            self.pos += 1
            children.append(self.parse_and())
        return _group("OR", [child for child in children if child is not None])

    def parse_and(self) -> _Node | None:
        children: list[_Node] = []
        while True:
            token = self.peek()
            if token is None or token.kind == ")" or self.is_operator(token, "OR"):
                break
            if self.is_operator(token, "AND"):
                self.pos += 1  # explicit AND reads the same as the implicit one
                continue
            if self.is_operator(token, "NOT"):
                # "a AND NOT b" means a NOT b; with nothing on its left NOT is
                # dropped, as FTS5 has no unary NOT.
                self.pos += 1
                following = self.peek()
                if children and following is not None and following.kind != ")":
                    if not self.is_operator(following):
                        negative = self.parse_primary()
                        if negative is not None:
                            children[-1] = _subtract(children[-1], negative)
                continue
            node = self.parse_not()
            if node is not None:
                children.append(node)
        return _group("AND", children)

    def parse_not(self) -> _Node | None:
        positive = self.parse_primary()
        negatives: list[_Node] = []
        while self.is_operator(self.peek(), "NOT"):
            self.pos += 1
            while self.is_operator(self.peek()):
                self.pos += 1  # "NOT AND x", "NOT NOT x": the extra operators are stray
            following = self.peek()
            if following is None or following.kind == ")":
                break
            negative = self.parse_primary()
            if negative is not None:
                negatives.append(negative)
        if positive is None:
            return None  # "-- NOT x": nothing to subtract from
        for negative in negatives:
            positive = _subtract(positive, negative)
        return positive

    def parse_primary(self) -> _Node | None:
        token = self.peek()
        assert token is not None
        if token.kind == "string":
            self.pos += 1
            return _phrase(token.text, token.prefix)
        if token.kind == "(":
            return self.parse_parens()
        if token.kind in (")", ","):
            self.pos += 1  # ")" never reaches here; a "," outside NEAR separates
            return None
        if token.text == "NEAR":
            near = self.parse_near()
            if near is not None:
                return near
        column = self.column_filter(token)
        if column is not None:
            return column
        # "1,234" and "a,b" are one word to the user; "," is its own token only
        # for NEAR's distance.
        text, previous = token.text, token.kind
        self.pos += 1
        while True:
            following = self.peek()
            if following is None or not following.glued:
                break
            if following.kind == "," or (following.kind == "word" and previous == ","):
                text += following.text
                previous = following.kind
                self.pos += 1
                continue
            break
        return _word_phrase(text)

    def parse_parens(self) -> _Node | None:
        end = self.closing.get(self.pos)
        if end is None or self.depth >= _MAX_DEPTH:
            self.pos += 1  # unbalanced or too deep: read as a separator
            return None
        self.pos += 1
        self.depth += 1
        inner = _Parser(self.tokens[self.pos : end], self.columns.values())
        inner.depth = self.depth
        node = inner.parse()
        self.depth -= 1
        self.pos = end + 1
        return node

    def parse_near(self) -> _Near | None:
        # NEAR ( phrase phrase ... [, N] ): anything else and NEAR is a plain word.
        start = self.pos
        opening = self.peek(1)
        if opening is None or opening.kind != "(":
            return None
        index = start + 2
        phrases: list[_Phrase] = []
        distance: int | None = None
        while index < len(self.tokens):
            token = self.tokens[index]
            if token.kind == ")":
                break
            if token.kind == ",":
                after = self.tokens[index + 1 : index + 3]
                if (
                    len(after) == 2
                    and after[0].kind == "word"
                    and after[0].text.isascii()
                    and after[0].text.isdigit()
                    and after[1].kind == ")"
                ):
                    distance = int(after[0].text)
                    index += 2
                    break
                return None
            if token.kind == "string":
                phrase = _phrase(token.text, token.prefix)
            elif token.kind == "word" and token.text not in _OPERATORS:
                phrase = _word_phrase(token.text)
            else:
                return None
            if phrase is not None:
                phrases.append(phrase)
            index += 1
        else:
            return None  # no closing parenthesis
        self.pos = index + 1
        if not phrases:
            return None
        return _Near(tuple(phrases), distance)

    def column_filter(self, token: _Token) -> _Node | None:
        # column:term, column:"a phrase", column:(a OR b), column:NEAR(...)
        if token.kind != "word" or ":" not in token.text:
            return None
        name, _, rest = token.text.partition(":")
        column = self.columns.get(name.lower())
        if column is None:
            return None
        if rest == "NEAR":  # column:NEAR(...) reads as one word, then "("
            near = self.parse_near()
            if near is not None:
                return _Column(column, near)
        if rest:
            self.pos += 1
            node: _Node | None = _word_phrase(rest)
        else:
            following = self.peek(1)
            if following is None or not following.glued or following.kind not in ("string", "(", "word"):
                return None
            if following.kind == "word" and following.text != "NEAR":
                return None
            self.pos += 1
            node = self.parse_primary()
        return _Column(column, node) if node is not None else None


def _subtract(positive: _Node, negative: _Node) -> _Not:
    if isinstance(positive, _Not):
        return _Not(positive.positive, (*positive.negatives, negative))
    return _Not(positive, (negative,))


def _group(op: str, nodes: list[_Node]) -> _Node | None:
    flat: list[_Node] = []
    for node in nodes:
        if isinstance(node, _Group) and node.op == op:
            flat.extend(node.children)
        else:
            flat.append(node)
    if not flat:
        return None
    if len(flat) == 1:
        return flat[0]
    return _Group(op, tuple(flat))


# ---------------------------------------------------------------- rendering
def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _render(node: _Node) -> str:
    if isinstance(node, _Phrase):
        return _quote(node.text) + ("*" if node.prefix else "")
    if isinstance(node, _Near):
        inner = " ".join(_render(phrase) for phrase in node.phrases)
        if node.distance is not None:
            inner += f", {node.distance}"
        return f"NEAR({inner})"
    if isinstance(node, _Column):
        return f"{_quote(node.column)}:{_render_operand(node.node)}"
    if isinstance(node, _Not):
        negatives = _group("OR", list(node.negatives))
        assert negatives is not None
        return f"{_render_operand(node.positive)} NOT {_render_operand(negatives)}"
    return f" {node.op} ".join(_render_operand(child) for child in node.children)


def _render_operand(node: _Node) -> str:
    # Parenthesize every compound operand: correct whatever FTS5's precedence.
    text = _render(node)
    return f"({text})" if isinstance(node, (_Group, _Not)) else text


def escape_query(text: str, columns: Collection[str] = ()) -> str:
    """User text as a valid FTS5 query keeping its syntax; ``""`` if nothing is searchable.

    *columns* are the index's column names that ``column:term`` may use; any
    other ``a:b`` is searched as the words ``a`` and ``b`` side by side.
    """
    tree = _Parser(_tokenize(_clean(text)), columns).parse()
    return _render(tree) if tree is not None else ""


def quote_all(text: str) -> str:
    """Every whitespace-separated word of *text* as a phrase, AND-ed: the safe fallback."""
    phrases = [_phrase(word) for word in _clean(text).split()]
    return " ".join(_render(phrase) for phrase in phrases if phrase is not None)


# A word as unicode61 sees one (letters and digits), and FTS5's operators.
_WORD = re.compile(r"[^\W_]+")
_KEYWORDS = frozenset({"AND", "OR", "NOT", "NEAR"})


def check_query_size(text: str, fts: str | None = None) -> None:
    """Raise SearchQueryError if *text* asks more of the index than one search may.

    *text* is the query as given.  Prefix terms and words are counted in
    *fts*, the expression that will run (the escaped query, or the raw one),
    so raw FTS5 syntax is bounded the same way; called without *fts* it
    checks the text itself, cheaply, before it is parsed at all.
    """
    advice = "narrow the search with filters (a time range, a level, a logger) instead"
    expression = text if fts is None else fts
    prefixes = expression.count("*")  # escaping only ever drops a *: the text's count is an upper bound
    if prefixes > MAX_PREFIX_TERMS:
        raise SearchQueryError(
            f"the query has {prefixes:,} prefix* terms; a search takes at most {MAX_PREFIX_TERMS}, "
            "as each one reads every indexed word it begins: spell out more of each word "
            f"or use fewer of them, and {advice}",
            code="query_too_large",
            details={"prefix_terms": prefixes, "limit": MAX_PREFIX_TERMS},
        )
    if len(text) > MAX_QUERY_CHARS:
        raise SearchQueryError(
            f"the query is {len(text):,} characters long; a search takes at most {MAX_QUERY_CHARS:,}: {advice}",
            code="query_too_large",
            details={"chars": len(text), "limit": MAX_QUERY_CHARS},
        )
    terms = sum(1 for word in _WORD.findall(expression) if word not in _KEYWORDS)
    if terms > MAX_QUERY_TERMS:
        raise SearchQueryError(
            f"the query has {terms:,} words; a search takes at most {MAX_QUERY_TERMS}: {advice}",
            code="query_too_large",
            details={"terms": terms, "limit": MAX_QUERY_TERMS},
        )
