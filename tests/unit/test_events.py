"""Tests for pywebtransport.shared.events."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

import pytest

from pywebtransport.shared.events import Event, EventEmitter, EventType

REFERENCE_EVENT_TYPES = {
    "connection_established",
    "connection_closed",
    "session_request",
    "session_pending",
    "session_ready",
    "session_closed",
    "session_draining",
    "session_data_blocked",
    "session_streams_blocked",
    "session_max_data_updated",
    "session_max_streams_bidi_updated",
    "session_max_streams_uni_updated",
    "datagram_received",
    "stream_opened",
    "stream_closed",
    "stream_reset_received",
    "stop_sending_received",
}


def test_event_type_values_match_reference() -> None:
    assert {member.value for member in EventType} == REFERENCE_EVENT_TYPES
    assert EventType.DATAGRAM_RECEIVED == "datagram_received"
    assert EventType("session_closed") is EventType.SESSION_CLOSED


def test_event_is_frozen_keyword_only_with_to_dict() -> None:
    event = Event(type=EventType.SESSION_READY, data={"session_id": 4}, source="s", timestamp=1.5)
    assert event.to_dict() == {
        "type": "session_ready",
        "data": {"session_id": 4},
        "source": "s",
        "timestamp": 1.5,
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.data = None  # type: ignore[misc]
    with pytest.raises(TypeError):
        Event(EventType.SESSION_READY)  # type: ignore[misc]
    assert Event(type="custom").timestamp > 0


async def test_emit_calls_sync_and_async_handlers_in_order() -> None:
    emitter = EventEmitter()
    calls: list[tuple[str, object]] = []

    def sync_handler(event: Event) -> None:
        calls.append(("sync", event.data))

    async def async_handler(event: Event) -> None:
        await asyncio.sleep(0)
        calls.append(("async", event.data))

    emitter.on(EventType.STREAM_OPENED, sync_handler)
    emitter.on(event_type=EventType.STREAM_OPENED, handler=async_handler)
    await emitter.emit(EventType.STREAM_OPENED, data=1)
    await emitter.emit(event_type="stream_opened", data=2, source=emitter)
    assert calls == [("sync", 1), ("async", 1), ("sync", 2), ("async", 2)]


async def test_handler_receives_event_fields() -> None:
    emitter = EventEmitter()
    received: list[Event] = []
    emitter.on(EventType.SESSION_CLOSED, received.append)
    await emitter.emit(EventType.SESSION_CLOSED, data={"error_code": 7}, source="me")
    (event,) = received
    assert event.type == EventType.SESSION_CLOSED
    assert event.data == {"error_code": 7}
    assert event.source == "me"


async def test_raising_handler_is_logged_and_others_run(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    def bad(event: Event) -> None:
        raise RuntimeError("boom")

    async def bad_async(event: Event) -> None:
        raise ValueError("async boom")

    emitter.on("x", bad)
    emitter.on("x", bad_async)
    emitter.on("x", lambda event: calls.append("good"))
    with caplog.at_level(logging.ERROR, logger="pywebtransport.events"):
        await emitter.emit("x")
    assert calls == ["good"]
    assert "boom" in caplog.text
    assert "async boom" in caplog.text
    assert emitter.get_stats()["total_handler_errors"] == 2


async def test_once_runs_once() -> None:
    emitter = EventEmitter()
    calls: list[object] = []
    emitter.once("x", lambda event: calls.append(event.data))
    assert emitter.listener_count("x") == 1
    await emitter.emit("x", data=1)
    await emitter.emit("x", data=2)
    assert calls == [1]
    assert emitter.listener_count("x") == 0
    assert not emitter.has_listeners("x")


async def test_off_removes_one_or_all() -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    def a(event: Event) -> None:
        calls.append("a")

    def b(event: Event) -> None:
        calls.append("b")

    emitter.on("x", a)
    emitter.on("x", b)
    emitter.off("x", a)
    await emitter.emit("x")
    assert calls == ["b"]
    emitter.off(event_type="x")
    await emitter.emit("x")
    assert calls == ["b"]
    emitter.off("never-registered", a)  # no error


async def test_on_any_and_off_any() -> None:
    emitter = EventEmitter()
    seen: list[str] = []

    def catch_all(event: Event) -> None:
        seen.append(str(event.type))

    emitter.on_any(catch_all)
    assert emitter.has_listeners("anything")
    await emitter.emit("a")
    await emitter.emit(EventType.STREAM_CLOSED)
    emitter.off_any(handler=catch_all)
    await emitter.emit("b")
    assert seen == ["a", "stream_closed"]
    emitter.on_any(catch_all)
    emitter.off_any()
    assert not emitter.has_listeners("a")


async def test_handler_removing_itself_during_emit() -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    def first(event: Event) -> None:
        calls.append("first")
        emitter.off("x", first)

    emitter.on("x", first)
    emitter.on("x", lambda event: calls.append("second"))
    await emitter.emit("x")
    await emitter.emit("x")
    assert calls == ["first", "second", "second"]


def test_emit_nowait_without_loop_runs_sync_handlers() -> None:
    emitter = EventEmitter()
    calls: list[object] = []
    emitter.on("x", lambda event: calls.append(event.data))
    emitter.emit_nowait("x", data="now")
    assert calls == ["now"]


def test_emit_nowait_without_loop_skips_async_handlers(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter()
    calls: list[str] = []

    async def handler(event: Event) -> None:
        calls.append("async")

    emitter.on("x", handler)
    emitter.on("x", lambda event: calls.append("sync"))
    with caplog.at_level(logging.ERROR, logger="pywebtransport.events"):
        emitter.emit_nowait("x")
    assert calls == ["sync"]
    assert "without a running event loop" in caplog.text


async def test_emit_nowait_runs_async_handlers() -> None:
    emitter = EventEmitter()
    done = asyncio.Event()
    calls: list[str] = []

    async def handler(event: Event) -> None:
        calls.append("async")
        done.set()

    emitter.on("x", handler)
    emitter.on("x", lambda event: calls.append("sync"))
    emitter.emit_nowait("x")
    # Sync handlers first; an async handler that never waits finishes at once too.
    assert calls == ["sync", "async"]
    assert done.is_set()


async def test_wait_for_single_and_list_of_types() -> None:
    emitter = EventEmitter()
    waiter = asyncio.ensure_future(emitter.wait_for(EventType.SESSION_READY))
    await asyncio.sleep(0)
    assert emitter.has_listeners(EventType.SESSION_READY)
    await emitter.emit(EventType.SESSION_READY, data="ready")
    assert (await waiter).data == "ready"
    assert not emitter.has_listeners(EventType.SESSION_READY)

    waiter = asyncio.ensure_future(
        emitter.wait_for(event_type=[EventType.SESSION_CLOSED, "other"], timeout=1)
    )
    await asyncio.sleep(0)
    await emitter.emit("other", data=2)
    assert (await waiter).type == "other"
    assert emitter.get_stats()["waiters"] == 0


async def test_wait_for_condition() -> None:
    emitter = EventEmitter()
    waiter = asyncio.ensure_future(emitter.wait_for("n", condition=lambda e: e.data > 2))
    await asyncio.sleep(0)
    for n in range(5):
        await emitter.emit("n", data=n)
    assert (await waiter).data == 3


async def test_wait_for_condition_error_propagates() -> None:
    emitter = EventEmitter()

    def condition(event: Event) -> bool:
        raise KeyError("bad condition")

    waiter = asyncio.ensure_future(emitter.wait_for("n", condition=condition))
    await asyncio.sleep(0)
    await emitter.emit("n")
    with pytest.raises(KeyError):
        await waiter


async def test_wait_for_timeout() -> None:
    emitter = EventEmitter()
    with pytest.raises(TimeoutError):
        await emitter.wait_for("never", timeout=0.01)
    with pytest.raises(asyncio.TimeoutError):
        await emitter.wait_for("never", timeout=0.01)
    assert not emitter.has_listeners("never")


async def test_pause_queues_and_resume_flushes_in_order() -> None:
    emitter = EventEmitter(max_queue_size=3)
    seen: list[object] = []
    emitter.on("x", seen.append)
    emitter.pause()
    assert emitter.is_paused
    for n in range(5):
        await emitter.emit("x", data=n)
    emitter.emit_nowait("x", data=5)
    assert seen == []
    assert emitter.get_stats()["events_dropped"] == 3
    task = emitter.resume()
    assert task is not None
    await task
    assert [event.data for event in seen] == [3, 4, 5]  # type: ignore[attr-defined]
    assert emitter.resume() is None


def test_resume_without_loop_dispatches_synchronously() -> None:
    emitter = EventEmitter()
    seen: list[Event] = []
    emitter.on("x", seen.append)
    emitter.pause()
    emitter.emit_nowait("x", data=1)
    assert emitter.resume() is None
    assert [event.data for event in seen] == [1]


async def test_max_listeners_warns_once_without_raising(caplog: pytest.LogCaptureFixture) -> None:
    emitter = EventEmitter(max_listeners=2)
    with caplog.at_level(logging.WARNING, logger="pywebtransport.events"):
        for _ in range(4):
            emitter.on("x", lambda event: None)
    assert emitter.listener_count("x") == 4
    warnings = [r for r in caplog.records if "leak" in r.getMessage()]
    assert len(warnings) == 1
    emitter.set_max_listeners(max_listeners=0)
    with caplog.at_level(logging.WARNING, logger="pywebtransport.events"):
        emitter.on("x", lambda event: None)
    assert len([r for r in caplog.records if "leak" in r.getMessage()]) == 1


async def test_listeners_and_remove_all() -> None:
    emitter = EventEmitter()

    def a(event: Event) -> None:
        pass

    emitter.on("x", a)
    emitter.on("y", a)
    emitter.on_any(a)
    assert emitter.listeners(event_type="x") == [a]
    assert emitter.listeners("none") == []
    emitter.remove_all_listeners("x")
    assert emitter.listener_count("x") == 0
    assert emitter.listener_count("y") == 1
    emitter.remove_all_listeners()
    assert emitter.get_stats()["total_listeners"] == 0
    assert emitter.get_stats()["any_listeners"] == 0


async def test_history() -> None:
    emitter = EventEmitter(max_history=3)
    for n in range(4):
        await emitter.emit("a" if n % 2 else "b", data=n)
    assert [e.data for e in emitter.get_event_history()] == [1, 2, 3]
    assert [e.data for e in emitter.get_event_history(event_type="a")] == [1, 3]
    assert [e.data for e in emitter.get_event_history(limit=1)] == [3]
    emitter.clear_history()
    assert emitter.get_event_history() == []
    no_history = EventEmitter()
    await no_history.emit("a")
    assert no_history.get_event_history() == []


async def test_stats_count_emits_and_calls() -> None:
    emitter = EventEmitter()
    emitter.on("x", lambda event: None)
    await emitter.emit("x")
    await emitter.emit("unheard")
    stats = emitter.get_stats()
    assert stats["total_events_emitted"] == 2
    assert stats["total_handlers_called"] == 1
    assert stats["total_listeners"] == 1
    assert stats["paused"] is False


async def test_close_cancels_waiters_and_drops_handlers() -> None:
    emitter = EventEmitter()
    calls: list[Event] = []
    emitter.on("x", calls.append)
    waiter = asyncio.ensure_future(emitter.wait_for("y"))
    await asyncio.sleep(0)
    await emitter.close()
    await emitter.close()
    with pytest.raises(RuntimeError):
        await waiter
    await emitter.emit("x")
    assert calls == []
    assert emitter.get_stats()["closed"] is True
    with pytest.raises(RuntimeError):
        await emitter.wait_for("x")


async def test_close_cancels_pending_handler_tasks() -> None:
    emitter = EventEmitter()
    started = asyncio.Event()
    outcome: list[str] = []

    async def slow(event: Event) -> None:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise
        outcome.append("finished")

    emitter.on("x", slow)
    emitter.emit_nowait("x")
    await started.wait()
    await emitter.close()
    assert outcome == ["cancelled"]
    assert emitter.get_stats()["total_handler_errors"] == 0  # a cancellation is no handler error


@pytest.mark.parametrize(
    "kwargs",
    [{"max_listeners": -1}, {"max_history": -1}, {"max_queue_size": 0}, {"max_history": True}],
)
def test_constructor_validates(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        EventEmitter(**kwargs)


def test_non_callable_handler_rejected() -> None:
    with pytest.raises(TypeError):
        EventEmitter().on("x", "not callable")  # type: ignore[arg-type]


async def test_async_handler_that_does_not_wait_runs_at_once_without_a_task() -> None:
    emitter = EventEmitter()
    seen: list[str] = []

    async def quick(event: Event) -> None:
        seen.append(event.data)

    emitter.on("x", quick)
    tasks_before = len(asyncio.all_tasks())
    emitter.emit_nowait("x", "now")
    assert seen == ["now"]  # ran inside emit_nowait: no loop iteration, no task
    assert len(asyncio.all_tasks()) == tasks_before


async def test_async_handler_that_waits_continues_in_a_task() -> None:
    emitter = EventEmitter()
    gate = asyncio.Event()
    seen: list[str] = []

    async def waits(event: Event) -> None:
        seen.append("before")
        value = await asyncio.wait_for(gate.wait(), 5)
        seen.append(f"after {value}")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    emitter.on("x", waits)
    emitter.emit_nowait("x")
    assert seen == ["before"]
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert seen == ["before", "after True"]
    await emitter.close()  # cancels the waiting handler through the task
    assert seen == ["before", "after True", "cancelled"]
