"""Ctrl-C at a safe point: a long run stops between two steps, after saving what it has.

Inside `deferred()`, the first SIGINT only raises a flag; the training loop and the search
check it (`requested()`) at their step boundaries, save a checkpoint or a snapshot, and raise
KeyboardInterrupt, which the CLI turns into a message saying how to resume. A second Ctrl-C
interrupts at once (the last checkpoint stays, as after a kill).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_flag = threading.Event()


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Defer SIGINT to the next safe point (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum, frame):
        if _flag.is_set():
            raise KeyboardInterrupt
        _flag.set()

    _flag.clear()
    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _flag.clear()


def requested() -> bool:
    return _flag.is_set()


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed (call after saving)."""
    if _flag.is_set():
        raise KeyboardInterrupt
