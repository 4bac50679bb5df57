"""core.ahead.read_ahead: items in order, made at most `depth` ahead, errors raised at their item, and the
thread stops when the caller stops early."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from visinstruct.core.ahead import read_ahead


def test_items_in_order_and_made_in_another_thread() -> None:
    threads: list[str] = []

    def made() -> Iterator[int]:
        for i in range(500):
            threads.append(threading.current_thread().name)
            yield i

    assert list(read_ahead(made(), depth=3)) == list(range(500))
    assert set(threads) == {"visinstruct-read-ahead"}


def test_at_most_depth_items_ahead() -> None:
    made: list[int] = []

    def count() -> Iterator[int]:
        for i in range(100):
            made.append(i)
            yield i

    it = read_ahead(count(), depth=2)
    assert next(it) == 0
    time.sleep(0.3)  # room for the thread to run ahead as far as it may
    assert len(made) <= 1 + 2 + 1  # the one taken, two waiting, one being put
    it.close()


def test_an_error_is_raised_at_its_item() -> None:
    def broken() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("line 3: not JSON")

    it = read_ahead(broken())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(ValueError, match="line 3"):
        next(it)


def test_closing_early_stops_the_thread() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    it = read_ahead(endless())
    assert next(it) == 0
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
