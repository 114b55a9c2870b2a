"""Tests for truncate_for_context: the seed's context-window history truncation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from reliant import ChatMessage
from reliant._failover import truncate_for_context

ROLES = ("system", "user", "assistant", "tool")


def test_drops_oldest_half_of_non_system() -> None:
    """Five non-system messages after a system one: the oldest two go, system and msg3 stay."""
    messages = [
        ChatMessage.system("sys"),
        ChatMessage.user("msg1"),
        ChatMessage.assistant("resp1"),
        ChatMessage.user("msg2"),
        ChatMessage.assistant("resp2"),
        ChatMessage.user("msg3"),
    ]
    kept, dropped = truncate_for_context(messages)
    assert dropped == 2
    assert len(kept) == 4
    assert kept[0].role == "system"
    assert kept[-1].content == "msg3"
    assert [m.content for m in kept] == ["sys", "msg2", "resp2", "msg3"]


def test_preserves_system_and_last_message() -> None:
    """With at most one non-system message there is nothing to drop."""
    messages = [ChatMessage.system("sys"), ChatMessage.user("only")]
    kept, dropped = truncate_for_context(messages)
    assert dropped == 0
    assert kept == messages

    kept, dropped = truncate_for_context([ChatMessage.user("only")])
    assert dropped == 0
    assert kept == [ChatMessage.user("only")]


def test_empty_and_system_only() -> None:
    """An empty history or one of only system messages drops nothing."""
    assert truncate_for_context([]) == ([], 0)
    only_system = [ChatMessage.system("a"), ChatMessage.system("b")]
    assert truncate_for_context(only_system) == (only_system, 0)


def test_system_messages_between_turns_survive() -> None:
    """System messages anywhere in the history survive; only non-system ones are dropped."""
    messages = [
        ChatMessage.user("u1"),
        ChatMessage.system("s1"),
        ChatMessage.assistant("a1"),
        ChatMessage.system("s2"),
        ChatMessage.user("u2"),
    ]
    kept, dropped = truncate_for_context(messages)
    assert dropped == 1
    assert [m.content for m in kept] == ["s1", "a1", "s2", "u2"]


def test_returns_a_new_list() -> None:
    """The result is a fresh list even when nothing is dropped, so callers may mutate it."""
    messages = [ChatMessage.user("only")]
    kept, _ = truncate_for_context(messages)
    assert kept is not messages


_HISTORIES = st.lists(st.sampled_from(ROLES), max_size=40).map(
    lambda roles: [ChatMessage(role, f"{role}-{i}") for i, role in enumerate(roles)]
)


@given(_HISTORIES)
def test_properties(messages: list[ChatMessage]) -> None:
    """System messages and the last turn survive, half the rest go, order is kept, input intact."""
    original = list(messages)
    kept, dropped = truncate_for_context(messages)

    assert messages == original  # input not mutated

    system = [m for m in messages if m.role == "system"]
    non_system = [m for m in messages if m.role != "system"]
    assert [m for m in kept if m.role == "system"] == system
    if non_system:
        assert non_system[-1] in kept
    assert dropped == (len(non_system) // 2 if len(non_system) > 1 else 0)
    assert len(kept) == len(messages) - dropped
    # Contents are unique, so the kept messages being an ordered subsequence
    # of the input means their relative order is preserved.
    positions = [messages.index(m) for m in kept]
    assert positions == sorted(positions)
    # Exactly the oldest non-system messages are the ones dropped.
    assert [m for m in kept if m.role != "system"] == non_system[dropped:]


@given(_HISTORIES)
def test_accepts_any_sequence(messages: list[ChatMessage]) -> None:
    """A tuple history gives the same result as a list, and stays untouched."""
    as_tuple = tuple(messages)
    assert truncate_for_context(as_tuple) == truncate_for_context(messages)
    assert as_tuple == tuple(messages)
