"""The TTS text splitter (first a short clause, then sentences) and Kokoro's espeak text normaliser."""

from __future__ import annotations

import pytest

from services.tts.text_norm import normalize_for_espeak
from services.tts.text_split import Piece, split_sentences, split_text


def texts(text: str, **kw: int) -> list[str]:
    return [p.text for p in split_text(text, **kw)]


def test_first_piece_is_a_short_clause_then_whole_sentences() -> None:
    pieces = split_text("Well, I think that, maybe, we should go now. The car is ready. Are you?")
    assert pieces == [
        Piece("Well, I think that,", "clause"),
        Piece("maybe, we should go now.", "sentence"),
        Piece("The car is ready.", "sentence"),
        Piece("Are you?", "sentence"),
    ]


def test_first_clause_needs_enough_words() -> None:
    assert texts("Sure, I can do that. Bye.") == ["Sure, I can do that.", "Bye."]
    assert texts("Sure, I can do that. Bye.", first_clause_min_words=1) == ["Sure,", "I can do that.", "Bye."]


def test_only_the_first_sentence_is_cut_at_a_clause() -> None:
    assert texts("One two three four, five. Six seven eight nine, ten eleven.") == [
        "One two three four,", "five.", "Six seven eight nine, ten eleven.",
    ]


@pytest.mark.parametrize(
    "sentence",
    [
        "Pi is 3.14 and e is 2.718 today.",
        "It costs 1,000,000 dollars in total.",
        "We meet at 5:30 tomorrow, my friend.",
        "Version 2.0.1 is out now.",
        "Custa 1.000 reais, ou 3,50 por dia.",
    ],
)
def test_numbers_never_split(sentence: str) -> None:
    pieces = texts(f"{sentence} Next one.", first_clause_min_words=100)
    assert pieces == [sentence, "Next one."]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith met Mrs. Jones and Prof. Brown here.",
        "Fruits, e.g. apples, and i.e. pears are here.",
        "The U.S. Army and the U.K. Navy met.",
        "J. R. R. Tolkien wrote it.",
        "O Dr. Silva e a Sra. Costa chegaram.",
        "Read No. 5 and vol. 2 first.",
        "Wait... then it came.",
    ],
)
def test_abbreviations_and_initials_never_end_a_sentence(text: str) -> None:
    assert split_sentences(text) == [text]


def test_sentence_ends() -> None:
    assert split_sentences("The answer is no. We go. Really?! Yes… Fine.") == [
        "The answer is no.", "We go.", "Really?!", "Yes…", "Fine.",
    ]
    assert split_sentences('He said "hi." Then (she left.) Done') == ['He said "hi."', "Then (she left.)", "Done"]
    assert split_sentences("Stop! now what") == ["Stop!", "now what"]


def test_line_breaks_end_sentences_and_spaces_collapse() -> None:
    assert texts("First line\n\n  second   line\tthree", first_clause_min_words=100) == [
        "First line", "second line three",
    ]


def test_long_sentences_are_cut_at_clauses_then_words() -> None:
    clause = "alpha beta gamma delta epsilon zeta eta theta"  # 46 chars
    sentence = ", ".join([clause] * 4) + "."
    pieces = split_text(sentence, first_clause_min_words=100, max_chars=100)
    assert all(len(p.text) <= 100 for p in pieces)
    assert " ".join(p.text for p in pieces) == sentence
    assert [p.pause for p in pieces] == ["clause", "sentence"]
    words = split_text("word " * 60, first_clause_min_words=100, max_chars=50)
    assert all(len(p.text) <= 50 for p in words) and words[0].pause == "none"
    assert " ".join(p.text for p in words).split() == ["word"] * 60
    unbroken = split_text("x" * 120, max_chars=50)
    assert [len(p.text) for p in unbroken] == [50, 50, 20]


def test_unspeakable_pieces_join_the_one_before_or_vanish() -> None:
    assert texts("... Hello there. ... !!! Bye.") == ["Hello there. ... !!!", "Bye."]
    assert split_text("...") == []
    assert split_text("   \n ") == []


@pytest.mark.parametrize(
    ("text", "lang", "expected"),
    [
        ("Pi is 3.14 today.", "en-us", "Pi is 3 point 1 4 today."),
        ("It costs 1,000,000 dollars.", "en-us", "It costs 1000000 dollars."),
        ("Custa 1.000 reais e 3,14 metros.", "pt-br", "Custa 1000 reais e 3 vírgula 14 metros."),
        ("Dr. Smith, e.g. the U.S. team.", "en-us", "Dr Smith, eg the US team."),
        ("O Dr. Silva chegou. Fim.", "pt-br", "O Dr Silva chegou. Fim."),
        ("Read No. 5 now. The answer is no. Go.", "en-us", "Read No 5 now. The answer is no. Go."),
        ("Apples, pears, etc. Then more.", "en-us", "Apples, pears, etc. Then more."),
    ],
)
def test_kokoro_text_normalisation(text: str, lang: str, expected: str) -> None:
    assert normalize_for_espeak(text, lang) == expected
