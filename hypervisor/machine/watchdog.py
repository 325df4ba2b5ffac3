"""A watchdog for runs that no instruction counter bounds.

A run with an instruction count stops by itself. Translated code runs without one: it keeps
its own clock in the vCPU area, which the guest kernel could overwrite (the area is guest-
reachable: docs/unicorn-facts.md, fact 6), and then it would never leave. One daemon thread,
shared by every machine, stops such a run after a wall-clock limit that no honest slice
comes near; the owner then learns why. Arming and disarming cost a lock, not a thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

LIMIT = 10.0  # seconds: honest slices are bounded to well under a second of guest time


class Watchdog:
    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._armed: dict[int, tuple[float, Callable[[], None]]] = {}
        self._thread: threading.Thread | None = None

    def arm(self, key: int, on_expiry: Callable[[], None], limit: float = LIMIT) -> None:
        with self._lock:
            self._armed[key] = (time.monotonic() + limit, on_expiry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="vmlab-watchdog")
                self._thread.daemon = True
                self._thread.start()
            self._lock.notify()

    def disarm(self, key: int) -> None:
        with self._lock:
            self._armed.pop(key, None)

    def _watch(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for key, (deadline, on_expiry) in list(self._armed.items()):
                    if deadline <= now:
                        del self._armed[key]
                        on_expiry()
                soonest = min((d for d, _ in self._armed.values()), default=now + 3600)
                self._lock.wait(max(soonest - now, 0.001))


WATCHDOG = Watchdog()
