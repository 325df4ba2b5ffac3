"""Stopping runs from outside the engine: Ctrl-C at the command line.

A run may sit in one long unicorn slice (a hog under bare metal runs millions of
instructions per `emu_start`), where no Python code runs, so a flag alone would be seen only
when the slice ends. Each machine therefore says while it runs; a request sets the flag and
stops every running CPU at once (`emu_stop`, safe from another thread). The run loops look at
the flag between slices and end with the summary so far. Whoever asks (the command line's
signal thread) clears it before the next command.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Cancel:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, Callable[[], None]] = {}
        self._requested = threading.Event()

    @property
    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self) -> None:
        """Stop every run now (from any thread)."""
        self._requested.set()
        with self._lock:
            stops = list(self._running.values())
        for stop in stops:
            stop()

    def clear(self) -> None:
        self._requested.clear()

    def running(self, key: int, stop: Callable[[], None]) -> None:
        with self._lock:
            self._running[key] = stop

    def done(self, key: int) -> None:
        with self._lock:
            self._running.pop(key, None)


CANCEL = Cancel()
