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

import itertools
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from .error_handling.utils.errors import SearchQueryError

__all__ = [
    "MAX_PREFIX_TERMS",
    "MAX_QUERY_CHARS",
    "MAX_QUERY_TERMS",
    "check_query_size",
    "escape_query",
    "excluded_only",
    "quote_all",
    "matcher",
    "required_tokens",
    "required_words",
    "split_wide",
    "WIDE_GLOB",
]

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
        self.exclusions: list[_Node] = []  # what a query of exclusions only leaves out
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
        # Exclusions met before anything to exclude from ("NOT refunded order",
        # "-refunded order"): FTS5 has no unary NOT, so they wait for a word.
        pending: list[_Node] = []

        def exclude(negative: _Node | None) -> None:
            if negative is None:
                return
            if children:
                # a NOT b AND c is (a AND c) NOT b: the AND is what is excluded from.
                children[-1] = _subtract(children[-1], negative)
            else:
                pending.append(negative)

        while True:
            token = self.peek()
            if token is None or token.kind == ")" or self.is_operator(token, "OR"):
                break
            if self.is_operator(token, "AND"):
                self.pos += 1  # explicit AND reads the same as the implicit one
                continue
            if self.is_operator(token, "NOT"):
                # "a AND NOT b" means a NOT b.
                self.pos += 1
                following = self.peek()
                if following is not None and following.kind != ")" and not self.is_operator(following):
                    exclude(self.parse_primary())
                continue
            if self.is_exclusion(token):
                # -word and -"a phrase", as in web searches: NOT word.
                exclude(self.parse_exclusion())
                continue
            node = self.parse_not()
            if node is not None:
                if pending and not children:
                    for negative in pending:
                        node = _subtract(node, negative)
                    pending.clear()
                children.append(node)
        if pending and not children:
            self.exclusions.extend(pending)
        return _group("AND", children)

    def is_exclusion(self, token: _Token) -> bool:
        """A word that starts with - after a space: -word, or - glued to a "phrase" or (group)."""
        if token.kind != "word" or not token.text.startswith("-") or token.glued:
            return False
        if token.text == "-":
            following = self.peek(1)
            return following is not None and following.glued and following.kind in ("string", "(")
        return _has_token_chars(token.text.lstrip("-"))

    def parse_exclusion(self) -> _Node | None:
        token = self.tokens[self.pos]
        self.pos += 1
        if token.text == "-":
            return self.parse_primary()
        return _word_phrase(token.text.lstrip("-"))

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


def excluded_only(text: str, columns: Collection[str] = ()) -> str | None:
    """For a query that only excludes (``-debug``, ``NOT health``): what it excludes, as one
    FTS5 expression (the exclusions OR-ed); None for any other query.

    FTS5 has no unary NOT: the caller keeps the records that do *not* match it.
    """
    parser = _Parser(_tokenize(_clean(text)), columns)
    if parser.parse() is not None or not parser.exclusions:
        return None
    node = _group("OR", parser.exclusions)
    return _render(node) if node is not None else None


def quote_all(text: str) -> str:
    """Every whitespace-separated word of *text* as a phrase, AND-ed: the safe fallback."""
    phrases = [_phrase(word) for word in _clean(text).split()]
    return " ".join(_render(phrase) for phrase in phrases if phrase is not None)


# One phrase of an FTS5 expression ("a ""b"" c", optionally a prefix), and what may follow it.
_QUOTED = re.compile(r'"((?:[^"]|"")*)"\*?')
_ASCII_WORD = re.compile(r"[a-z0-9]+")


def required_words(fts: str) -> list[str]:
    """Lowercase ASCII words that every row matching the FTS5 expression *fts* holds as
    substrings of its indexed text, when that text is ASCII; [] when none can be told.

    Only phrases AND-ed together (what escape_query and quote_all make of plain
    words) are read; anything else (OR, NOT, NEAR, column filters) gives [].
    For ASCII text unicode61's tokens are its runs of letters and digits,
    lowercased, so each word of a phrase (a prefix term's too) is a substring
    of the row's text lowercased: a necessary condition, cheap to test on a
    row before the full-text index is asked.  Non-ASCII phrases add nothing
    (the tokenizer folds case and diacritics beyond ASCII).
    """
    return _required(fts, whole=False)


def required_tokens(fts: str) -> list[str]:
    """Lowercase ASCII tokens that every row matching *fts* holds whole, when its text is
    ASCII (janus_utils._words): required_words less the last word of each prefix
    phrase ("err"* finds "error", which holds no token "err")."""
    return _required(fts, whole=True)


def _required(fts: str, whole: bool) -> list[str]:
    words: list[str] = []
    position = 0
    while True:
        found = _QUOTED.match(fts, position)
        if found is None:
            return []
        text = found.group(1).replace('""', '"')
        if text.isascii():
            phrase = _ASCII_WORD.findall(text.lower())
            if whole and found.group(0).endswith("*"):
                phrase = phrase[:-1]
            words.extend(word for word in phrase if word not in words)
        position = found.end()
        if position == len(fts):
            return words
        for separator in (" AND ", " "):
            if fts.startswith(separator, position) and fts.startswith('"', position + len(separator)):
                position += len(separator)
                break
        else:
            return []


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


# ---------------------------------------------------------------- CJK and emoji
# Characters unicode61 cannot find inside a word: CJK scripts run words
# together without spaces (日本語のログ is one token to it), and emoji are not
# letters (a separator to it).  Rows holding one are also indexed by
# trigrams (the "logs_wide" table, see _schema), where a term with one is
# looked up as a substring.  The same ranges in a GLOB class pick those rows
# (SQLite's GLOB compares code points).
_WIDE_RANGES = "\u2e80-\u2fdf\u3000-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef\u2600-\u27bf\U0001f000-\U0001fbff"
_WIDE = re.compile(f"[{_WIDE_RANGES}]")
WIDE_GLOB = "*[" + re.sub(r"\\[uU]([0-9a-fA-F]+)", lambda m: chr(int(m.group(1), 16)), _WIDE_RANGES) + "]*"
_TERM = re.compile(r'-?"(?:[^"]|"")*"\*?|\S+')


def split_wide(text: str) -> tuple[str, list[tuple[str, bool]]]:
    """Take the terms holding CJK or emoji out of *text*: (the rest, [(term, excluded)]).

    Each such term (a word, or a "phrase") is then found as a substring, and
    is always required, or always excluded when written -term or NOT term,
    whatever AND or OR stand around it.
    """
    if not _WIDE.search(text):
        return text, []
    terms: list[tuple[str, bool]] = []
    rest: list[str] = []
    last = 0
    for match in _TERM.finditer(text):
        word = match.group()
        if not _WIDE.search(word):
            continue
        before = text[last : match.start()]
        excluded = word.startswith("-")
        body = word[1:] if excluded else word
        negated = _NOT_BEFORE.search(before)
        if negated and not excluded:
            excluded, before = True, before[: negated.start()] + " "
        if len(body) >= 2 and body.startswith('"') and body.rstrip("*").endswith('"'):
            body = body.rstrip("*")[1:-1].replace('""', '"')
        body = _clean(body).strip().rstrip("*")
        if body:
            terms.append((body, excluded))
        rest.append(before)
        last = match.end()
    rest.append(text[last:])
    return " ".join(rest), terms


_NOT_BEFORE = re.compile(r"(?:^|(?<=\s))NOT\s+$")  # "NOT " right before a term


# ---------------------------------------------------------------- the same query without an index
_TOKEN_CATEGORIES = ("L", "N")


def _is_token_char(char: str) -> bool:
    category = unicodedata.category(char)
    return category[0] in _TOKEN_CATEGORIES or category == "Co"


def _fold(token: str) -> str:
    # unicode61 folds case and (remove_diacritics=1) drops diacritics of Latin letters.
    text = token.casefold()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFD", text)
    kept = []
    for char in decomposed:
        if unicodedata.category(char) == "Mn" and kept and ord(kept[-1]) < 0x250:
            continue
        kept.append(char)
    return unicodedata.normalize("NFC", "".join(kept))


def tokens(text: str) -> list[str]:
    """*text* as FTS5's unicode61 tokenizer sees it: runs of letters and digits, folded."""
    found: list[str] = []
    start = None
    for index, char in enumerate(text):
        if _is_token_char(char):
            if start is None:
                start = index
        elif start is not None:
            found.append(_fold(text[start:index]))
            start = None
    if start is not None:
        found.append(_fold(text[start:]))
    return found


_NEAR_DEFAULT = 10  # FTS5's NEAR distance when none is given


def matcher(text: str, columns: Collection[str] = ("message", "fields", "exception")) -> Callable[[Mapping[str, str | None]], bool]:
    """A test of one record's columns with the meaning LogStore gives *text*, for records without an index.

    The same parse (escape_query), the same words (unicode61's tokens:
    ``look`` does not find ``lookup``, ``1042`` is not inside
    ``err_1042c0``), phrases, prefix*, NEAR, column:term, -word and NOT,
    and CJK or emoji terms as substrings (split_wide).  Archives are
    searched with it, so that a record answers a query the same way before
    and after it is pruned.
    """
    rest, wide = split_wide(text)
    parser = _Parser(_tokenize(_clean(rest)), columns)
    tree = parser.parse()
    exclusions = parser.exclusions if tree is None else []
    names = tuple(columns)

    def match(record: Mapping[str, str | None]) -> bool:
        cache: dict[str, list[str]] = {}

        def words(column: str) -> list[str]:
            if column not in cache:
                cache[column] = tokens(record.get(column) or "")
            return cache[column]

        def starts(phrase: _Phrase, column: str) -> list[int]:
            wanted = tokens(phrase.text)
            if not wanted:
                return []
            have = words(column)
            last = len(wanted) - 1
            hits = []
            for i in range(len(have) - last):
                if have[i : i + last] == wanted[:last] and (
                    have[i + last].startswith(wanted[last]) if phrase.prefix else have[i + last] == wanted[last]
                ):
                    hits.append(i)
            return hits

        def near(node: _Near, column: str) -> bool:
            distance = _NEAR_DEFAULT if node.distance is None else node.distance
            spans = []
            for phrase in node.phrases:
                size = len(tokens(phrase.text))
                hits = starts(phrase, column)
                if not hits:
                    return False
                spans.append([(hit, hit + size) for hit in hits[:50]])
            for combo in itertools.product(*spans):
                ordered = sorted(combo)
                gap = sum(max(0, b[0] - a[1]) for a, b in zip(ordered, ordered[1:]))
                if gap <= distance:
                    return True
            return False

        def holds(node: _Node, scope: tuple[str, ...]) -> bool:
            if isinstance(node, _Phrase):
                return any(starts(node, column) for column in scope)
            if isinstance(node, _Near):
                return any(near(node, column) for column in scope)
            if isinstance(node, _Column):
                return node.column in scope and holds(node.node, (node.column,))
            if isinstance(node, _Not):
                return holds(node.positive, scope) and not any(holds(n, scope) for n in node.negatives)
            if node.op == "AND":
                return all(holds(child, scope) for child in node.children)
            return any(holds(child, scope) for child in node.children)

        for term, excluded in wide:
            present = any(term in (record.get(column) or "") for column in names)
            if present == excluded:
                return False
        if tree is not None:
            return holds(tree, names)
        if exclusions:
            return not any(holds(node, names) for node in exclusions)
        return bool(wide) or not rest.strip()

    return match
