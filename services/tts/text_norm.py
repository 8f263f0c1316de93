"""Rewrite numbers and abbreviations that trip Kokoro's espeak phonemizer, per language.

kokoro-onnx phonemizes with ``phonemizer`` and ``preserve_punctuation=True``, which cuts the text
at every period: "Pi is 3.14 today." came out as "three. fourteen today", "1.000 reais" as
"one. zero zero zero", and "Dr. Smith" with a full stop after "doctor". So, before phonemizing:
decimals are spelled with the language's decimal word ("3.14" -> "3 point 1 4" in English;
"3,14" -> "3 vírgula 14" in Portuguese), thousands separators are dropped ("1,000" / "1.000" ->
"1000"), and abbreviation periods go ("Dr." -> "Dr", "U.S." -> "US"); espeak expands the rest.
Piper's own espeak bridge reads all of these correctly, so only the Kokoro engine uses this.
"""

from __future__ import annotations

import re

from core.speakable import ABBREVIATIONS, BEFORE_NUMBER

_DECIMAL_DOT = ("en", "hi", "ja", "zh", "cmn")
"""Languages (primary subtag) written 3.14 and 1,000; the others write 3,14 and 1.000."""
_DECIMAL_WORDS = {"en": "point", "hi": "point", "pt": "vírgula", "es": "coma", "fr": "virgule", "it": "virgola"}
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_THOUSANDS_DOT = re.compile(r"(?<=\d)\.(?=\d{3}(?!\d))")
_DOT_DECIMAL = re.compile(r"(?<=\d)\.(\d+)")
_COMMA_DECIMAL = re.compile(r"(?<=\d),(\d+)")
_DOTTED = re.compile(r"\b((?:[^\W\d_]\.){2,})", re.UNICODE)
_ABBREV = re.compile(r"\b([^\W\d_]+)\.(?=\s+\S)", re.UNICODE)


def normalize_for_espeak(text: str, language: str) -> str:
    primary = language.split("-", 1)[0].lower()
    if primary in _DECIMAL_DOT:
        text = _THOUSANDS_COMMA.sub("", text)
        word = _DECIMAL_WORDS.get(primary, "point")
        text = _DOT_DECIMAL.sub(lambda m: f" {word} " + " ".join(m.group(1)), text)
    else:
        text = _THOUSANDS_DOT.sub("", text)
        word = _DECIMAL_WORDS.get(primary, "")
        if word:
            text = _COMMA_DECIMAL.sub(lambda m: f" {word} {m.group(1)}", text)
    text = _DOTTED.sub(lambda m: m.group(1).replace(".", ""), text)
    return _ABBREV.sub(_drop_abbreviation_period, text)


def _drop_abbreviation_period(m: re.Match[str]) -> str:
    word = m.group(1)
    lower = word.lower()
    if lower in ABBREVIATIONS and lower != "etc":
        return word
    if lower in BEFORE_NUMBER and m.string[m.end() :].lstrip()[:1].isdigit():
        return word
    return m.group(0)
