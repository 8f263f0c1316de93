"""Cut a stream of LLM tokens into speakable chunks: a short first clause, then whole sentences.

The first chunk decides the time to first audio, so it ends at the first clause mark (``,``
``;`` ``:`` or a dash) or sentence end once it has ``first_min_words`` words; every later
chunk is a whole sentence (``.`` ``!`` ``?`` ``…``, closing quotes and brackets included, or
a line break). A mark only counts once the text after it is known: whitespace, then the next
character. So numbers never split (``3.14``, ``1,000``, ``5:30`` have no space after the mark),
nor do abbreviations and initials (``Dr. Smith``, ``e.g. this``, ``the U.S. team``, ``No. 5``),
nor a period followed by a lowercase word. Waiting for that next character costs nothing in
practice: LLM tokens carry their leading space, so the space and the next word arrive together.
A sentence longer than ``max_chars`` is cut at a clause mark, else between words. Markdown
decoration (asterisks, backticks, headings, bullets) is dropped from what is spoken; chunks with
nothing to pronounce are dropped.
"""

from __future__ import annotations

import re

from core.speakable import is_sentence_end, speakable

_SENTENCE_END = re.compile(r"([.!?…]+)([\"'”’»)\]]*)(\s+)(?=\S)")
_CLAUSE_MARK = re.compile(r"(?:[,;:]|\s[—–-])(\s+)(?=\S)|[—–](?=\S)")
_MARKUP = re.compile(r"\*+|__|`+|^\s*#+\s*|^\s*[-•]\s+", re.MULTILINE)
_SPACES = re.compile(r"\s+")


def clean(text: str) -> str:
    """What TTS should read: markdown decoration dropped, whitespace folded."""
    return _SPACES.sub(" ", _MARKUP.sub(" ", text)).strip()


def ends_sentence(text: str, start: int, m: re.Match[str]) -> bool:
    """Whether the sentence-end candidate ``m`` (text after it known) really ends a sentence."""
    last_word = text[start : m.end(1)].rsplit(None, 1)[-1]
    return is_sentence_end(m.group(1), last_word, text[m.end() :])


class SpeakableChunker:
    """Feed token deltas, get speakable chunks as soon as each is certain; ``flush()`` at the end."""

    def __init__(self, *, first_min_words: int = 3, max_chars: int = 250) -> None:
        self.first_min_words, self.max_chars = first_min_words, max_chars
        self._buf = ""
        self._first = True

    def feed(self, delta: str) -> list[str]:
        self._buf += delta
        out: list[str] = []
        while (cut := self._next_cut()) is not None:
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
        return out

    def flush(self) -> list[str]:
        """The rest of the text (the stream ended), as whole sentences."""
        out = self.feed("")
        rest, self._buf = self._buf, ""
        while len(rest) > self.max_chars:
            cut = self._long_cut(rest)
            self._emit(rest[:cut], out)
            rest = rest[cut:]
        self._emit(rest, out)
        return out

    def pending(self) -> str:
        """Text received but not yet cut into a chunk."""
        return self._buf

    def _emit(self, text: str, out: list[str]) -> None:
        chunk = clean(text)
        if speakable(chunk):
            out.append(chunk)
            self._first = False

    def _next_cut(self) -> int | None:
        buf = self._buf
        newline = buf.find("\n")
        if newline >= 0 and not speakable(clean(buf[:newline])):
            self._buf = buf = buf[newline + 1 :]  # a blank or decoration-only line
            return self._next_cut() if buf else None
        candidates: list[int] = []
        if newline >= 0:
            candidates.append(newline + 1)
        for m in _SENTENCE_END.finditer(buf):
            if ends_sentence(buf, 0, m) and (not self._first or self._words(buf[: m.start(3)])):
                candidates.append(m.start(3))
                break
        if self._first:
            for m in _CLAUSE_MARK.finditer(buf):
                end = m.start(1) if m.group(1) is not None else m.end()
                if self._words(buf[:end]):
                    candidates.append(end)
                    break
        if candidates:
            return min(candidates)
        if len(buf) > self.max_chars and buf[self.max_chars :].strip():
            return self._long_cut(buf)
        return None

    def _words(self, head: str) -> bool:
        return len(clean(head).split()) >= self.first_min_words

    def _long_cut(self, text: str) -> int:
        """Where to cut a too-long sentence: the last clause mark, else the last space, before max_chars."""
        window = text[: self.max_chars + 1]
        marks = [m.start(1) if m.group(1) is not None else m.end() for m in _CLAUSE_MARK.finditer(window)]
        marks = [i for i in marks if i > self.max_chars // 3]
        if marks:
            return marks[-1]
        space = window.rfind(" ")
        return space if space > 0 else self.max_chars

