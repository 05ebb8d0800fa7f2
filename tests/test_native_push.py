"""``POST /push`` answered without the ASGI bridge: the coroutine driven in place, answers in order.

The native engine hands a push's body straight to the shared endpoint and
drives its coroutine itself (:func:`~sse_fast.engines.native.push.run_now`);
a push that waits for its store goes on in a task.  The end-to-end tests
run on both engines, so that both answer pipelined pushes the same way
whether the store answers at once (memory) or after a round trip (SQLite).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from _raw_http import Responses, connect
from conftest import Serve, Subscribe, unique_uid
from sse_fast.engines.native.push import Suspended, run_now


def push_request(body: bytes) -> bytes:
    return b"POST /push HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body)


def unicast(uid: str, n: int) -> bytes:
    return b'{"uids":["%s"],"events":[{"event":"n","data":%d}]}' % (uid.encode(), n)


# ---------------------------------------------------------------- run_now


def test_a_coroutine_that_never_waits_runs_in_place_without_a_task() -> None:
    async def answer() -> int:
        return 42

    async def main() -> None:
        before = len(asyncio.all_tasks())
        assert run_now(answer()) == 42
        assert len(asyncio.all_tasks()) == before

    asyncio.run(main())


def test_one_that_waits_goes_on_in_a_task_through_futures_turns_and_errors() -> None:
    async def waits() -> int:
        loop = asyncio.get_running_loop()
        later: asyncio.Future[int] = loop.create_future()
        loop.call_later(0.01, later.set_result, 5)
        await asyncio.sleep(0)
        failing: asyncio.Future[int] = loop.create_future()
        loop.call_soon(failing.set_exception, ValueError("from the future"))
        with pytest.raises(ValueError, match="from the future"):
            await failing
        return await later

    async def main() -> None:
        with pytest.raises(Suspended) as suspended:
            run_now(waits())
        assert await suspended.value.task == 5

    asyncio.run(main())


def test_a_bare_yield_waits_one_turn_as_in_a_task_not_two() -> None:
    """``await asyncio.sleep(0)`` asks for one turn; the task that carries the coroutine on starts a
    turn later, and that is the turn (a store that needs a task yields so to get one)."""

    class Ticker:
        turns = 0
        left = 0

        def start(self) -> None:
            self.left = 20
            asyncio.get_running_loop().call_soon(self.tick)

        def tick(self) -> None:
            self.turns += 1
            self.left -= 1
            if self.left > 0:
                asyncio.get_running_loop().call_soon(self.tick)

    ticker = Ticker()

    async def yields(times: int) -> int:
        started = ticker.turns
        for _ in range(times):
            await asyncio.sleep(0)
        return ticker.turns - started

    async def in_a_task(times: int) -> int:
        return await asyncio.get_running_loop().create_task(yields(times))

    async def in_place(times: int) -> int:
        loop = asyncio.get_running_loop()
        out: asyncio.Future[int] = loop.create_future()

        def start() -> None:  # from a callback, as the engine's protocol does: no task
            try:
                run_now(yields(times))
            except Suspended as suspended:
                suspended.task.add_done_callback(lambda task: out.set_result(task.result()))

        loop.call_soon(start)
        return await out

    async def main() -> None:
        for times in (1, 3):
            for drive in (in_a_task, in_place):
                ticker.start()
                assert await drive(times) == times, (drive.__name__, times)
                await asyncio.sleep(0.01)  # the ticker runs out

    asyncio.run(main())


def test_an_error_raised_in_place_or_later_reaches_the_caller() -> None:
    async def fails_at_once() -> None:
        raise KeyError("now")

    async def fails_later() -> None:
        await asyncio.sleep(0)
        raise KeyError("later")

    async def main() -> None:
        with pytest.raises(KeyError, match="now"):
            run_now(fails_at_once())
        with pytest.raises(Suspended) as suspended:
            run_now(fails_later())
        with pytest.raises(KeyError, match="later"):
            await suspended.value.task

    asyncio.run(main())


def test_cancelling_the_task_cancels_the_coroutine() -> None:
    cleaned: list[str] = []

    async def waits_for_ever() -> None:
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            cleaned.append("finally ran")

    async def main() -> None:
        with pytest.raises(Suspended) as suspended:
            run_now(waits_for_ever())
        task: asyncio.Task[Any] = suspended.value.task
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert cleaned == ["finally ran"]

    asyncio.run(main())


# ------------------------------------------------------------- end to end


@pytest.mark.parametrize("store", ["memory://", "sqlite"])
def test_pipelined_pushes_are_answered_in_order_and_delivered_in_order(
    serve: Serve, subscribe: Subscribe, tmp_path: Path, store: str
) -> None:
    """Twenty pushes in one segment, a bad one among them: each gets its own answer, in order,
    and the subscriber gets the accepted ones in the order they were sent."""
    server = serve("--store", f"sqlite:///{tmp_path / 'h.db'}" if store == "sqlite" else store)
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    sock = connect(server)
    requests = [push_request(unicast(uid, n)) for n in range(20)]
    requests[7] = push_request(b'{"uids":["%s"],"events":[{"event":"n"}]}' % uid.encode())  # no data
    sock.sendall(b"".join(requests))
    answers = Responses(sock).read(20)
    assert [status for status, _, _ in answers] == [400 if n == 7 else 200 for n in range(20)]
    assert b"events[0].data" in answers[7][2]
    received = reader.wait_events(19)
    assert [e.json() for e in received] == [n for n in range(20) if n != 7]
    ids = [int(e.id.rpartition("-")[2]) for e in received if e.id]
    assert ids == sorted(ids) and len(ids) == 19
    sock.close()


def test_a_push_whose_body_arrives_in_pieces_is_answered_once_it_is_whole(
    serve: Serve, subscribe: Subscribe
) -> None:
    server = serve("--store", "memory://")
    uid = unique_uid()
    reader = subscribe(f"{server.url}/events?uid={uid}")
    reader.wait_subscribed()
    sock = connect(server)
    request = push_request(unicast(uid, 1))
    head_end = request.index(b"\r\n\r\n") + 4
    sock.sendall(request[:head_end])
    for start in range(head_end, len(request), 7):
        sock.sendall(request[start : start + 7])
    [(status, _, _)] = Responses(sock).read(1)
    assert status == 200
    assert [e.json() for e in reader.wait_events(1)] == [1]
    sock.close()
