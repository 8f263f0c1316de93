"""Rules for where spoken text may be cut, shared by the TTS splitter and the conversation chunker.

Both cut text into pieces that sound natural when synthesised one at a time, so both must agree
that "Dr. Smith", "U.S. Army", "e.g. this" and "No. 5" are not sentence ends while "the answer
is no. We" is. Numbers and decimals are protected by the callers' patterns (a period must be
followed by a space to be a candidate at all).
"""

from __future__ import annotations

import re

ABBREVIATIONS = frozenset((
    "mr", "mrs", "ms", "mx", "dr", "drs", "prof", "sr", "sra", "srta", "dra", "jr", "st", "mt", "ft", "vs",
    "approx", "dept", "est", "fig", "inc", "ltd", "co", "corp", "gen", "gov", "sen", "rep", "lt", "col",
    "capt", "sgt", "cmdr", "adm", "ave", "av", "blvd", "rd", "jan", "feb", "aug", "sept", "oct", "nov", "dec",
    "cf", "ca", "etc", "pág", "págs", "tel", "ex", "exa", "exmo",
))
"""Lower-case, without the final period: never a sentence end, even before a capital."""
BEFORE_NUMBER = frozenset({"no", "nos", "nº", "vol", "p", "pp", "n", "art", "cap", "num"})
"""Abbreviations only when a number follows (``No. 5``); ``the answer is no. We`` still ends."""

DOTTED = re.compile(r"(?:[^\W\d_]\.)+", re.UNICODE)
"""Initials and dotted abbreviations: ``U.S.``, ``e.g.``, ``J.``."""
_SPEAKABLE = re.compile(r"[^\W_]", re.UNICODE)


def speakable(text: str) -> bool:
    """True when ``text`` has a letter or digit to pronounce."""
    return _SPEAKABLE.search(text) is not None


def is_sentence_end(marks: str, last_word: str, after: str) -> bool:
    """Whether terminal ``marks`` (``.``, ``?!``, ``…``) closing ``last_word`` end a sentence.

    ``after`` is the text that follows, starting at its first non-space character (non-empty).
    """
    if "!" in marks or "?" in marks:
        return True
    if after[0].islower():
        return False  # "e.g. this", "approx. ten", "... and then"
    if marks != ".":
        return True  # an ellipsis before a capital
    word = last_word.lstrip("\"'“‘«([")
    bare = word[:-1].lower()
    if bare in ABBREVIATIONS or DOTTED.fullmatch(word):
        return False  # "Dr. Smith", "U.S. Army", "J. Doe"
    return not (bare in BEFORE_NUMBER and after[0].isdigit())
