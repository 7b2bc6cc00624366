"""Split a guest program into lines of words: the only lexical rules the language has.

Why so little: the language is line-oriented (one statement per line, blocks closed by ``end``),
so a lexer only needs to drop comments and blank lines, keep quoted strings whole and report
where each line came from.  Units, ranges and numbers are read by the parser, which knows what it
expects at each place and can say so in its message."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"'}


@dataclass(frozen=True, slots=True)
class Word:
    """One word of a line; ``quoted`` words came from ``"..."`` (escapes already resolved)."""

    text: str
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Line:
    """The words of one non-empty source line and its number (1-based)."""

    number: int
    words: tuple[Word, ...]


class LexError(ValueError):
    """A malformed line (unterminated string, bad escape); the parser adds file and line."""


def split_line(text: str) -> tuple[Word, ...]:
    """The words of one line, comments (``#`` outside a string) removed."""
    words: list[Word] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            break
        elif c == '"':
            value, i = _string(text, i + 1)
            words.append(Word(value, quoted=True))
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in '#"':
                i += 1
            words.append(Word(text[start:i]))
    return tuple(words)


def _string(text: str, i: int) -> tuple[str, int]:
    """Read a quoted string whose opening quote is just before ``i``; returns (value, next index)."""
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= n:
                break
            e = text[i + 1]
            if e == "x":
                digits = text[i + 2:i + 4]
                if len(digits) != 2 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                    raise LexError(f"bad escape \\x{digits} in a string (use \\xHH, two hex digits)")
                out.append(chr(int(digits, 16)))
                i += 4
                continue
            if e not in _ESCAPES:
                raise LexError(f"unknown escape \\{e} in a string (known: \\n \\t \\r \\0 \\\\ \\\" \\xHH)")
            out.append(_ESCAPES[e])
            i += 2
            continue
        out.append(c)
        i += 1
    raise LexError("unterminated string (a string ends with \" on the same line)")


def lines(source: str) -> Iterator[Line | tuple[int, LexError]]:
    """Every line with words, in order; a line that cannot be split yields (number, error)."""
    for number, text in enumerate(source.splitlines(), start=1):
        try:
            words = split_line(text)
        except LexError as exc:
            yield number, exc
            continue
        if words:
            yield Line(number, words)
