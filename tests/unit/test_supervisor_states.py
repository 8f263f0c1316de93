"""The transition table: every legal edge passes, every other pair raises, every edge is commented."""

from __future__ import annotations

import inspect
import itertools
import re

import pytest

from core.errors import SupervisorError
from core.managers.supervisor import states
from core.managers.supervisor.states import TRANSITIONS, IllegalTransition, State, check_transition

ALL_PAIRS = list(itertools.product(State, State))
LEGAL = sorted(TRANSITIONS, key=lambda e: (e[0].value, e[1].value))
ILLEGAL = [p for p in ALL_PAIRS if p not in TRANSITIONS]


@pytest.mark.parametrize(("src", "dst"), LEGAL, ids=[f"{s.value}->{d.value}" for s, d in LEGAL])
def test_legal_transition_returns_its_label(src: State, dst: State) -> None:
    assert check_transition("stt", src, dst) == TRANSITIONS[(src, dst)]


@pytest.mark.parametrize(("src", "dst"), ILLEGAL, ids=[f"{s.value}->{d.value}" for s, d in ILLEGAL])
def test_illegal_transition_raises_naming_service_and_edge(src: State, dst: State) -> None:
    with pytest.raises(IllegalTransition) as ei:
        check_transition("stt", src, dst)
    msg = str(ei.value)
    assert "'stt'" in msg and f"{src.value} -> {dst.value}" in msg
    assert isinstance(ei.value, SupervisorError)


def test_supervisord_edges_are_present() -> None:
    expected = {
        (State.STOPPED, State.STARTING), (State.STARTING, State.RUNNING), (State.STARTING, State.BACKOFF),
        (State.BACKOFF, State.STARTING), (State.BACKOFF, State.FATAL), (State.RUNNING, State.EXITED),
        (State.RUNNING, State.STOPPING), (State.STOPPING, State.STOPPED), (State.EXITED, State.BACKOFF),
        (State.FATAL, State.STARTING),
    }
    assert expected <= set(TRANSITIONS)


def test_no_self_loops_and_every_state_reachable_and_leavable() -> None:
    assert all(s != d for s, d in TRANSITIONS)
    for st in State:
        assert any(d is st for _, d in TRANSITIONS) or st is State.STOPPED, f"{st} unreachable"
        assert any(s is st for s, _ in TRANSITIONS), f"{st} is a dead end"


def test_every_edge_has_a_comment_above_it() -> None:
    lines = inspect.getsource(states).splitlines()
    edge = re.compile(r"^\s*\(State\.(\w+), State\.(\w+)\):")
    seen = 0
    for i, line in enumerate(lines):
        if edge.match(line):
            seen += 1
            assert lines[i - 1].strip().startswith("#"), f"edge without a comment: {line.strip()}"
    assert seen == len(TRANSITIONS)
