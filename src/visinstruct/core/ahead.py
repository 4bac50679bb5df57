"""Read an iterator ahead in a background thread, so that slow items (images hashed, a file parsed) are made
while the caller works on the ones before them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
_END = object()


class _Raised:
    """An exception the producer met, handed to the consumer to raise."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read_ahead(items: Iterable[T], depth: int = 1) -> Iterator[T]:
    """The items of `items`, made in a daemon thread at most `depth` items ahead of the caller.

    An exception raised while making an item is raised to the caller at that item. Closing the iterator
    (or dropping it) stops the thread after the item it is making.
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(slots, item, stop):
                    return
        except BaseException as error:
            _put(slots, _Raised(error), stop)
            return
        _put(slots, _END, stop)

    thread = threading.Thread(target=produce, name="visinstruct-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()


def _put(slots: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put the item, waiting for room; False when the consumer stopped meanwhile."""
    while not stop.is_set():
        try:
            slots.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
