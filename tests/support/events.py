"""Waiting for something observable to happen (a file appears, a request is logged, a thread polled), with a
generous timeout that only guards against a hang: a test never sleeps for a time that must be "long enough"."""
from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(check: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.05) -> T:
    """Call `check` until it returns something truthy and return that; AssertionError naming `what` if it
    has not after `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)
