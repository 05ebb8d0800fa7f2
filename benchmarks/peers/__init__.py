"""Peer servers for ``benchmarks/fanout.py``: the same minimal SSE contract, different stacks."""
