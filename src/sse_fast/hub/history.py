"""Which history the hub numbers events in, and how far it has got."""

from __future__ import annotations

from dataclasses import dataclass

from ..ids import format_id


@dataclass(slots=True)
class History:
    """The epoch of the history events are numbered in, and the last sequence number the hub has seen.

    Push, resend and store health share this one object: when the store loses
    its history, epoch and sequence are replaced together.
    """

    epoch: str
    seq: int = 0

    @property
    def last_id(self) -> str | None:
        """The id of the last event numbered in this history (None before the first)."""
        return format_id(self.epoch, self.seq) if self.seq else None

    def saw(self, seq: int) -> None:
        """A store numbered events up to ``seq`` (this hub's pushes, or another process's)."""
        self.seq = max(self.seq, seq)

    def number(self, count: int) -> tuple[list[int], list[str]]:
        """Sequence numbers and ids for ``count`` new events, when no store numbers them."""
        first = self.seq + 1
        self.seq += count
        seqs = list(range(first, self.seq + 1))
        return seqs, [format_id(self.epoch, s) for s in seqs]
