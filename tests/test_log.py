"""The failover path builds log records only when some handler would output them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from reliant import ChatMessage, ProviderError, ReliableProvider
from reliant._log import emitting, logger
from reliant.testing import Fail, Reply, ScriptedProvider

pytestmark = pytest.mark.anyio

HI = [ChatMessage.user("hi")]


class Recording(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def isolated() -> Iterator[logging.Logger]:
    """The reliant logger with the root logger's handlers out of the way (pytest adds some)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    try:
        yield logger
    finally:
        root.handlers = saved


def test_only_a_null_handler_emits_nothing() -> None:
    """Unconfigured logging (the library's NullHandler alone) is not worth a record."""
    with isolated():
        assert not emitting(logging.WARNING)


def test_a_handler_on_an_ancestor_counts() -> None:
    """A handler on the root logger receives reliant's records, so they are built."""
    with isolated() as reliant_logger:
        handler = Recording()
        logging.getLogger().addHandler(handler)
        assert emitting(logging.WARNING)
        handler.setLevel(logging.ERROR)
        assert not emitting(logging.WARNING)  # below the handler's level
        handler.setLevel(logging.NOTSET)
        reliant_logger.propagate = False
        try:
            assert not emitting(logging.WARNING)  # the record never reaches the root
        finally:
            reliant_logger.propagate = True


async def test_failover_warning_reaches_a_configured_handler() -> None:
    """With a handler configured, a failed attempt is logged with its structured fields."""
    handler = Recording()
    logger.addHandler(handler)
    try:
        llm = ReliableProvider(
            [
                ("bad", ScriptedProvider([Fail(ProviderError("HTTP 401", status_code=401))])),
                ("good", ScriptedProvider([Reply("ok")])),
            ]
        )
        assert await llm.chat_with_history(HI, "m", 0.0) == "ok"
    finally:
        logger.removeHandler(handler)
    moving_on = [r for r in handler.records if r.getMessage() == "non-retryable error, moving on"]
    assert len(moving_on) == 1
    record = moving_on[0]
    assert (record.provider, record.model, record.attempt) == ("bad", "m", 1)  # type: ignore[attr-defined]
    assert record.funcName == "_failed"  # the caller, not the helper
