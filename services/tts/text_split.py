"""Cut text into speakable pieces: first a short clause, then whole sentences.

The first piece decides the time to first audio, so it ends at the first clause mark (``,`` ``;``
``:`` or a dash, followed by a space) once it has a few words; after that every piece is a
sentence. Sentences end at ``.`` ``!`` ``?`` or ``…`` followed by a space (closing quotes and
brackets stay with the sentence), or at a line break. Numbers never split: ``3.14``, ``1,000``
and ``5:30`` have no space after the mark. Abbreviations and initials never end a sentence
(``Dr. Smith``, ``e.g. this``, ``the U.S. team``, ``J. R. R.``), nor does a period followed by a
lowercase word. A sentence longer than ``max_chars`` is cut at its clauses, then between words.
Pieces with nothing to pronounce (a stray ``...``) join the piece before them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from core.speakable import is_sentence_end, speakable

Pause = Literal["sentence", "clause", "none"]

_SENTENCE_END = re.compile(r"([.!?…]+)([\"'”’»)\]]*)(?=\s|$)")
_CLAUSE_MARK = re.compile(r"(?:[,;:]|\s[—–-])(?=\s)|[—–](?=\S)")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")


@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    pause: Pause
    """What ended it: the pause to leave after it when the pieces are played back to back."""


def split_text(text: str, *, first_clause_min_words: int = 3, max_chars: int = 250) -> list[Piece]:
    """The pieces of ``text`` in order (see the module docstring); empty if nothing is speakable."""
    sentences = [s for line in text.splitlines() for s in split_sentences(_SPACES.sub(" ", line).strip())]
    pieces: list[Piece] = []
    if sentences:
        head, rest = first_clause(sentences[0], first_clause_min_words)
        if rest:
            pieces.append(Piece(head, "clause"))
            sentences[0] = rest
    for sentence in sentences:
        pieces.extend(cut_long(sentence, max_chars))
    return _merge_unspeakable(pieces)


def split_sentences(line: str) -> list[str]:
    """Sentences of one line (no line breaks inside)."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(line):
        if _ends_sentence(line, start, m):
            out.append(line[start : m.end()].strip())
            start = m.end()
    if line[start:].strip():
        out.append(line[start:].strip())
    return [s for s in out if s]


def _ends_sentence(line: str, start: int, m: re.Match[str]) -> bool:
    marks = m.group(1)
    after = line[m.end() :].lstrip()
    if not after:
        return True
    last_word = line[start : m.end(1)].rsplit(" ", 1)[-1]
    return is_sentence_end(marks, last_word, after)


def first_clause(sentence: str, min_words: int) -> tuple[str, str]:
    """(head, rest): head ends at the first clause mark after ``min_words`` words; rest may be ''."""
    for m in _CLAUSE_MARK.finditer(sentence):
        head, rest = sentence[: m.end()].strip(), sentence[m.end() :].strip()
        if len(head.split()) >= min_words:
            return (head, rest) if speakable(rest) else (sentence, "")
    return sentence, ""


def cut_long(sentence: str, max_chars: int) -> list[Piece]:
    """The sentence as one piece, or cut at clause marks (then spaces) into pieces of ``max_chars``."""
    if len(sentence) <= max_chars:
        return [Piece(sentence, "sentence")]
    clauses: list[str] = []
    start = 0
    for m in _CLAUSE_MARK.finditer(sentence):
        clauses.append(sentence[start : m.end()].strip())
        start = m.end()
    clauses.append(sentence[start:].strip())
    pieces: list[Piece] = []
    current = ""
    for clause in filter(None, clauses):
        if current and len(current) + 1 + len(clause) > max_chars:
            pieces.append(Piece(current, "clause"))
            current = ""
        current = f"{current} {clause}".strip()
        while len(current) > max_chars:
            cut = current.rfind(" ", 0, max_chars + 1)
            cut = cut if cut > 0 else max_chars
            pieces.append(Piece(current[:cut].strip(), "none"))
            current = current[cut:].strip()
    if current:
        pieces.append(Piece(current, "sentence"))
    return pieces


def _merge_unspeakable(pieces: list[Piece]) -> list[Piece]:
    """Join pieces with nothing to pronounce to the piece before; drop them at the start."""
    out: list[Piece] = []
    for piece in pieces:
        if speakable(piece.text):
            out.append(piece)
        elif out:
            out[-1] = Piece(f"{out[-1].text} {piece.text}", piece.pause)
    return out
