"""A publisher's own event ids in the hub, in-process: sent as given, live and replayed, and resumable.

Over real sockets, on both engines and all three stores: test_publisher_ids.py.
"""

from __future__ import annotations

import pytest

from sse_fast import Event, Hub, InvalidEventError
from sse_fast.hub import RESET_EVENT
from sse_fast.ids import MAX_PUBLISHER_ID_LENGTH
from sse_fast.stores import MemoryStore
from test_hub import Connection, run, settle


def test_a_replay_sends_the_very_bytes_the_live_stream_sent() -> None:
    """Publisher ids and server ids, broadcasts and unicasts: a resume from before them gets
    byte for byte what a subscriber connected all along got."""

    async def main() -> None:
        hub = Hub(store=MemoryStore())
        await hub.start()
        live = await Connection(hub, "a").open()
        before = (await hub.push(Event("mark", 0)))[0]
        await settle()
        seen = len(live.writes)
        await hub.push(Event("order", {"n": 1}, id="order:1"))
        await hub.push(Event("order", {"n": 2}))
        unicasts = [Event("chat", "x", id="msg é 1"), Event("chat", "y\nz", id="msg é 2", raw=True)]
        await hub.push(unicasts, ["a"])
        await hub.push(Event(data=None, id="plain"))
        await settle()
        live_bytes = b"".join(live.writes[seen:])
        assert b"id: order:1\nevent: order\n" in live_bytes and "id: msg é 2\n".encode() in live_bytes
        again = await Connection(hub, "a").open(last_event_id=before)
        await settle()
        replayed = b"".join(again.writes[1:])  # after the connect heartbeat
        assert replayed == live_bytes
        assert [e.id for e in again.events] == ["order:1", again.events[1].id, "msg é 1", "msg é 2", "plain"]
        await hub.close()

    run(main)


@pytest.mark.parametrize(
    ("bad_id", "rule"),
    [
        ("abc-1", "form of the server's ids"),
        ("k3v9x0qa-12", "form of the server's ids"),
        ("", "must not be empty"),
        ("x" * (MAX_PUBLISHER_ID_LENGTH + 1), f"at most {MAX_PUBLISHER_ID_LENGTH} characters"),
    ],
)
def test_an_id_that_cannot_be_a_publisher_id_is_refused_naming_the_field(bad_id: str, rule: str) -> None:
    async def main() -> None:
        store = MemoryStore()
        hub = Hub(store=store)
        await hub.start()
        conn = await Connection(hub, "a").open()
        with pytest.raises(InvalidEventError, match=rule) as info:
            await hub.push([Event("x", 1, id="fine-id"), Event("x", 2, id=bad_id)])
        assert info.value.field == "events[1].id"
        await settle()
        assert conn.events == [] and await store.last_seq() == 0  # nothing stored, nothing sent
        assert await hub.push(Event("x", 3, id="x" * MAX_PUBLISHER_ID_LENGTH)) != []
        await hub.close()

    run(main)


def test_resuming_from_a_publisher_id_continues_after_the_latest_event_with_it() -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore())
        await hub.start()
        await hub.push(Event("e", 0, id="v1"))
        await hub.push(Event("e", 1, id="same"))
        await hub.push(Event("e", 2))
        await hub.push([Event("e", 3, id="same"), Event("e", 4)])
        await hub.push(Event("e", 5, id="same"), ["someone-else"])  # the latest with it, for another user
        await hub.push(Event("e", 6, id="v2"))
        conn = await Connection(hub, "a").open(last_event_id="same")
        await settle()
        assert [(e.id, e.data) for e in conn.events] == [("v2", "6")]
        conn = await Connection(hub, "b").open(last_event_id="v1")
        await settle()
        assert [e.data for e in conn.events] == ["1", "2", "3", "4", "6"]
        await hub.push(Event("e", 7, id="v3"))
        await settle()
        assert conn.events[-1].id == "v3"
        await hub.close()

    run(main)


def test_an_expired_publisher_id_gets_reset_expired_and_an_unknown_one_unknown_id() -> None:
    async def main() -> None:
        hub = Hub(store=MemoryStore(max_events=3))
        await hub.start()
        await hub.push(Event("e", 0, id="gone"))
        await hub.push(Event("e", 1, id="dropped-too"))
        await hub.push(Event("e", 2, id="edge"))  # the event after it is retained: no gap
        await hub.push([Event("e", n, id=f"kept{n}") for n in range(3, 6)])
        resumes = [("gone", "expired"), ("dropped-too", "expired"), ("never-sent", "unknown_id")]
        for last_id, reason in resumes:
            conn = await Connection(hub, "a").open(last_event_id=last_id)
            await settle()
            assert conn.events[0].event == RESET_EVENT
            assert conn.events[0].json() == {"reason": reason, "last_event_id": last_id}
            assert [e.id for e in conn.events[1:]] == ["kept3", "kept4", "kept5"]
        conn = await Connection(hub, "a").open(last_event_id="edge")
        await settle()
        assert [e.id for e in conn.events] == ["kept3", "kept4", "kept5"]
        assert hub.stats.resets == 3
        await hub.close()

    run(main)
