"""SpeakableChunker: a short first clause, then sentences; never a cut inside numbers or abbreviations."""

from __future__ import annotations

import re

import pytest

from core.conversation.chunker import SpeakableChunker, clean


def chunks(text: str, *, by: str = "tokens", **kw: int) -> list[str]:
    """Feed ``text`` as LLM-like tokens (a word with its leading space), per character, or whole."""
    c = SpeakableChunker(**kw)
    if by == "whole":
        parts = [text]
    elif by == "chars":
        parts = list(text)
    else:
        parts = re.findall(r"\s*\S+", text)
    out: list[str] = []
    for p in parts:
        out += c.feed(p)
    return out + c.flush()


@pytest.mark.parametrize("by", ["tokens", "chars", "whole"])
def test_first_clause_then_whole_sentences(by: str) -> None:
    text = "Well, the capital of France is Paris, a city of lights. It has, by the way, great food! Want more?"
    assert chunks(text, by=by) == [
        "Well, the capital of France is Paris,",
        "a city of lights.",
        "It has, by the way, great food!",
        "Want more?",
    ]


def test_a_short_sentence_first_does_not_make_a_chunk_alone() -> None:
    assert chunks("Sure. The answer is four. Bye.") == ["Sure. The answer is four.", "Bye."]


@pytest.mark.parametrize("by", ["tokens", "chars"])
@pytest.mark.parametrize(
    "sentence",
    [
        "Pi is about 3.14 and e is about 2.72 here.",
        "It costs 1,000 dollars or 2,500.50 euros today.",
        "We meet at 5:30 in the morning tomorrow.",
        "Ask Dr. Smith and Mrs. Jones about it.",
        "Use a fruit, e.g. an apple or i.e. something sweet.",
        "The U.S. team won the gold medal again.",
        "See No. 5 on the list and vol. 2 as well.",
        "He said hello... and then he left quickly.",
        "The value is .5 or 0.75 depending on things.",
    ],
)
def test_numbers_abbreviations_and_decimals_never_split(sentence: str, by: str) -> None:
    out = chunks("First one is here. " + sentence + " Next one here.", by=by)
    assert out == ["First one is here.", sentence, "Next one here."]


def test_the_first_clause_never_splits_a_number() -> None:
    assert chunks("The total was 1,234,567 people, more than last year.") == [
        "The total was 1,234,567 people,", "more than last year."
    ]


def test_a_mark_waits_for_the_next_character() -> None:
    c = SpeakableChunker()
    assert c.feed("The answer is 3.") == []  # could be 3.14
    assert c.feed("14") == []
    assert c.feed(" exactly. ") == []  # the sentence end waits for the next word
    assert c.feed("Then") == ["The answer is 3.14 exactly."]
    assert c.flush() == ["Then"]


def test_abbreviation_before_a_capital_and_period_before_lowercase() -> None:
    assert chunks("I met Mr. Brown at the store today. it was fun. Yes It was.", first_min_words=1) == [
        "I met Mr. Brown at the store today. it was fun.", "Yes It was."
    ]


def test_line_breaks_end_chunks_and_markdown_is_not_spoken() -> None:
    text = "## Steps\n\n- **Boil** the water\n- Add `pasta` now\n1. Drain it. Serve."
    assert chunks(text) == ["Steps", "Boil the water", "Add pasta now", "1.", "Drain it.", "Serve."]


def test_quotes_and_brackets_stay_with_their_sentence() -> None:
    assert chunks('She said "it is done." Then (quietly) we left the room.', first_min_words=2) == [
        'She said "it is done."', "Then (quietly) we left the room."
    ]


def test_a_sentence_longer_than_max_chars_is_cut_at_a_clause_else_a_space() -> None:
    long = "One two three four five six seven eight nine ten, eleven twelve thirteen fourteen fifteen"
    out = chunks("Here we go. " + long + ".", max_chars=60)
    assert out == ["Here we go.", "One two three four five six seven eight nine ten,",
                   "eleven twelve thirteen fourteen fifteen."]
    words = " ".join(f"word{i}" for i in range(40))
    out = chunks(words, max_chars=50)
    assert all(len(c) <= 50 for c in out) and " ".join(out) == words


def test_unspeakable_pieces_are_dropped_and_flush_keeps_the_rest() -> None:
    assert chunks("... *** Hello there friend, how are you") == ["... Hello there friend,", "how are you"]
    assert chunks("   ") == [] and chunks("?!") == []


def test_question_and_exclamation_end_even_before_lowercase() -> None:
    assert chunks("Is it true? yes it is! really.", first_min_words=1) == ["Is it true?", "yes it is!", "really."]


def test_clean() -> None:
    assert clean("**bold**  and `code`\n# Title") == "bold and code Title"
