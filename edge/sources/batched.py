"""Sources that read in lists: what one read (a serial chunk, a Modbus poll, a file) gave.

The gateway hands these lists between threads whole (gateway.device.source_merge); anyone else
may iterate the source and get the readings one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

from edge.contracts import Reading


class BatchedSource:
    """Subclasses implement ``batches()``; iterating the source flattens them."""

    def batches(self) -> Iterator[list[Reading]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[Reading]:
        return chain.from_iterable(self.batches())
