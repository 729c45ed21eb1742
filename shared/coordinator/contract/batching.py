"""Cutting a list of items into consecutive runs whose batch message stays under a size limit.

msgpack encodes an array as a header followed by its items' encodings, one after the other,
so a batch's size is known from each item's size alone: the envelope with an empty list,
the array header for the run's length, and the items. Each item is encoded once.

    >>> runs([40, 40, 40, 40], envelope=20, max_bytes=110)
    [range(0, 2), range(2, 4)]
"""

from __future__ import annotations

from collections.abc import Sequence


def array_header_bytes(length: int) -> int:
    """The size of a msgpack array header (fixarray, array 16, array 32)."""
    return 1 if length < 16 else 3 if length < 1 << 16 else 5


def runs(sizes: Sequence[int], *, envelope: int, max_bytes: int, max_items: int | None = None) -> list[range]:
    """Consecutive index ranges of ``sizes`` (in order, none left out, none empty) whose batch
    ``envelope + array_header_bytes(len) + sum(sizes)`` is at most ``max_bytes``, and which
    hold at most ``max_items`` items; as few as a greedy cut gives.

    ``envelope``: the batch's encoded size with an empty list, less that list's 1-byte header.
    An item that does not fit in a batch of its own raises ValueError: the caller built a
    message the bus can never carry.
    """
    limit = (len(sizes) or 1) if max_items is None else max_items
    if limit < 1:
        raise ValueError(f"max_items must be at least 1, not {limit}")
    cut: list[range] = []
    start, total = 0, 0  # the open run: sizes[start:index], total bytes of its items
    for index, size in enumerate(sizes):
        count = index - start
        if count and (count == limit or envelope + array_header_bytes(count + 1) + total + size > max_bytes):
            cut.append(range(start, index))
            start, total = index, 0
        if start == index and envelope + array_header_bytes(1) + size > max_bytes:
            raise ValueError(f"item {index} is {size} bytes: a batch of it alone is over the {max_bytes}-byte limit")
        total += size
    if start < len(sizes):
        cut.append(range(start, len(sizes)))
    return cut
