"""Prometheus text exposition of the hub's figures (``GET /metrics``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# name, type, help, key in Hub.snapshot()
_SERIES = (
    ("sse_fast_connections", "gauge", "Open subscriber connections.", "connections"),
    ("sse_fast_users", "gauge", "Distinct users with at least one connection.", "users"),
    ("sse_fast_events_total", "counter", "Events accepted for delivery.", "events"),
    ("sse_fast_deliveries_total", "counter", "Events written to a subscriber connection.", "deliveries"),
    ("sse_fast_dropped_total", "counter", "Events a slow consumer missed when it was dropped.", "dropped"),
    ("sse_fast_slow_consumers_total", "counter", "Subscribers dropped for falling behind.", "slow_consumers"),
    ("sse_fast_heartbeats_total", "counter", "Heartbeat comments written.", "heartbeats"),
    ("sse_fast_replayed_total", "counter", "Events resent from the store on reconnect.", "replayed"),
    ("sse_fast_resets_total", "counter", "Reset events sent for ids that could not be resumed.", "resets"),
    (
        "sse_fast_store_unavailable_total",
        "counter",
        "Pushes refused: the store could not be reached.",
        "store_unavailable",
    ),
    (
        "sse_fast_histories_lost_total",
        "counter",
        "Times the store's history was wiped under the hub.",
        "histories_lost",
    ),
    (
        "sse_fast_tokens_expired_total",
        "counter",
        "Streams ended because the subscriber's token expired.",
        "tokens_expired",
    ),
    (
        "sse_fast_overloaded_total",
        "counter",
        "Broadcasts refused: the fan-out was too far behind.",
        "overloaded",
    ),
)


def render_metrics(snapshot: Mapping[str, Any]) -> str:
    """Render :meth:`Hub.snapshot` in the Prometheus text format (version 0.0.4).

    A node of a cluster (on the Redis bus) labels every series with ``node``,
    so that one scrape config covers all nodes, and adds how many it sees.
    """
    node = snapshot.get("node") or {}
    label = f'node="{_escape(node["id"])}"' if node.get("bus") == "following" else ""
    plain = f"{{{label}}}" if label else ""
    extra = f",{label}" if label else ""
    lines: list[str] = []
    for name, kind, help_text, key in _SERIES:
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} {kind}",
            f"{name}{plain} {snapshot.get(key, 0)}",
        ]
    name = "sse_fast_push_failures_total"
    lines += [f"# HELP {name} User x event pairs that could not be delivered live.", f"# TYPE {name} counter"]
    for reason, count in sorted(snapshot.get("failed_by_reason", {}).items()):
        lines.append(f'{name}{{reason="{reason}"{extra}}} {count}')
    name = "sse_fast_store_available"
    available = int(snapshot.get("store", {}).get("available", True))
    lines += [
        f"# HELP {name} 1 while the store answers (pushes can be accepted).",
        f"# TYPE {name} gauge",
        f"{name}{plain} {available}",
    ]
    ring = snapshot.get("ring", {})
    for key, help_text in (("frames", "Frames held in the fan-out ring."), ("bytes", "Bytes held in it.")):
        name = f"sse_fast_ring_{key}"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{plain} {ring.get(key, 0)}"]
    if label:
        cluster = snapshot.get("cluster", {})
        for key, value, help_text in (
            ("nodes", len(cluster.get("nodes", ())), "Nodes on this Redis prefix whose lease is current."),
            (
                "connections",
                cluster.get("connections", 0),
                "Open streams on all nodes, as this node last read.",
            ),
            ("users", cluster.get("users", 0), "Each node's distinct users, summed, as this node last read."),
        ):
            name = f"sse_fast_cluster_{key}"
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name}{plain} {value}"]
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    """A label value as the text format wants it."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
