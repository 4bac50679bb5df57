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
    """The items of `items`, made in a daemon thread: `depth` made items wait, and the thread makes the next.

    An exception raised while making an item is raised to the caller at that item. Closing the iterator
    (or dropping it) stops the thread after the item it is making (and closes `items` when it is a generator).
    """
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not _put(slots, item, stop):
                    return
        except BaseException as error:  # handed over: raised in the caller's thread
            _put(slots, _Raised(error), stop)
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:  # a generator: its files are closed in this thread, which ran it
                close()
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
