"""The LLM request of a turn: the agent's system prompt, recent history, the user's words.

History is cut to the agent's ``history_turns`` most recent turns (a turn is a user item and the
assistant items after it). An assistant reply the user talked over is sent as the part that was
actually spoken, with a marker, so the model knows the user did not hear the rest.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.conversation.types import AgentConfig, HistoryItem
from uvpb import llm_pb2

INTERRUPTED_MARKER = "[interrupted by the user]"


def recent_history(history: Sequence[HistoryItem], turns: int) -> list[HistoryItem]:
    """The items of the last ``turns`` turns (a turn starts at a user item)."""
    if turns <= 0:
        return []
    starts = [i for i, item in enumerate(history) if item.role == "user"]
    if len(starts) <= turns:
        return list(history)
    return list(history[starts[-turns] :])


def history_text(item: HistoryItem) -> str:
    if item.role == "assistant" and item.interrupted:
        return f"{item.text} {INTERRUPTED_MARKER}".strip()
    return item.text


def build_messages(agent: AgentConfig, history: Sequence[HistoryItem], user_text: str) -> list[llm_pb2.ChatMessage]:
    messages = [llm_pb2.ChatMessage(role="system", content=agent.system_prompt)]
    for item in recent_history(history, agent.history_turns):
        text = history_text(item)
        if text:
            messages.append(llm_pb2.ChatMessage(role=item.role, content=text))
    messages.append(llm_pb2.ChatMessage(role="user", content=user_text))
    return messages


def generate_request(agent: AgentConfig, history: Sequence[HistoryItem], user_text: str) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        messages=build_messages(agent, history, user_text),
        temperature=agent.temperature,
        max_tokens=agent.max_tokens,
    )
