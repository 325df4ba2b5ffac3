"""Ctrl-C at the command line: stop the run, print what it did so far, exit with 130.

Python turns SIGINT into KeyboardInterrupt only between bytecodes, so during one long
unicorn slice it is not seen at all, and when it is, it lands anywhere (a traceback, a half
summary). Instead the signal's C handler writes to a wake-up pipe as soon as it arrives, a
thread reading the pipe asks the engine to stop (`CANCEL.request`: every running CPU is
stopped at once), and the run loops end between slices with their summary.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hypervisor.machine.cancel import CANCEL

STATUS = 128 + signal.SIGINT  # the shell's status for a command ended by Ctrl-C


@contextmanager
def ctrl_c_stops_runs() -> Iterator[None]:
    """While inside, SIGINT stops the engine's runs instead of raising KeyboardInterrupt
    (only the main thread can take signals: called from another, it changes nothing)."""
    CANCEL.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.signal(signal.SIGINT, lambda number, frame: None)
    previous_fd = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    thread = threading.Thread(target=_listen, args=(read_end,), name="vmlab-ctrl-c", daemon=True)
    thread.start()
    try:
        yield
    finally:
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous)
        os.close(write_end)  # the thread reads end of file and ends
        thread.join(timeout=1)
        os.close(read_end)


def _listen(read_end: int) -> None:
    while os.read(read_end, 1):
        CANCEL.request()
