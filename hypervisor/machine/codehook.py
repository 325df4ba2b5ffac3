"""Per-instruction code hooks, per-store write hooks and the interrupt hook with no Python
layer between unicorn and the callback.

Unicorn's `hook_add` wraps each callback in two Python frames (an exception guard and an
argument adapter) and passes the `Uc` and user data along: ~0.3 µs an instruction, a tenth of
what a traced instruction costs (and the interrupt hook runs on every trap). These register a
ctypes callback that calls the callback directly, with only the values it needs, keeping
unicorn's contract for errors: an exception stops the emulation and `emu_start` raises it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from unicorn import UC_HOOK_CODE, UC_HOOK_INTR, UC_HOOK_MEM_WRITE, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib

_CODE_HOOK = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p
)
_WRITE_HOOK = ctypes.CFUNCTYPE(  # (uc, access type, address, size, value, user data)
    None,
    ctypes.c_void_p,
    ctypes.c_int,
    ctypes.c_uint64,
    ctypes.c_int,
    ctypes.c_int64,
    ctypes.c_void_p,
)
_INTR_HOOK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)


class _DirectHook:
    """A hook of kind `KIND` calling a ctypes function, until `remove`."""

    KIND: int

    def _add(self, uc: Uc, function: Any) -> None:
        self._uc = uc
        self._function = function  # kept alive as long as the hook
        self._handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            uc._uch,  # noqa: SLF001 (unicorn's Python API adds its own layers)
            ctypes.byref(self._handle),
            self.KIND,
            ctypes.cast(self._function, ctypes.c_void_p),
            None,
            ctypes.c_uint64(1),
            ctypes.c_uint64(0),
        )
        if status:
            raise UcError(status)

    def remove(self) -> None:
        status = uclib.uc_hook_del(self._uc._uch, self._handle)  # noqa: SLF001
        if status:
            raise UcError(status)


class CodeHook(_DirectHook):
    """`callback(address, size)` before every instruction of `uc`, until `remove`."""

    KIND = UC_HOOK_CODE

    def __init__(self, uc: Uc, callback: Callable[[int, int], None]) -> None:
        def call(_: int, address: int, size: int, __: int) -> None:
            try:
                callback(address, size)
            except BaseException as err:
                _stop(uc, err)

        self._add(uc, _CODE_HOOK(call))


class WriteHook(_DirectHook):
    """`callback(address, size, value)` at every store the CPU makes, until `remove` (a
    recording keeps each one)."""

    KIND = UC_HOOK_MEM_WRITE

    def __init__(self, uc: Uc, callback: Callable[[int, int, int], None]) -> None:
        def call(_: int, __: int, address: int, size: int, value: int, ___: int) -> None:
            try:
                callback(address, size, value)
            except BaseException as err:
                _stop(uc, err)

        self._add(uc, _WRITE_HOOK(call))


class InterruptHook(_DirectHook):
    """`callback(vector)` at every exception and INT n (docs/unicorn-facts.md, fact 2)."""

    KIND = UC_HOOK_INTR

    def __init__(self, uc: Uc, callback: Callable[[int], None]) -> None:
        def call(_: int, vector: int, __: int) -> None:
            try:
                callback(vector)
            except BaseException as err:
                _stop(uc, err)

        self._add(uc, _INTR_HOOK(call))


def _stop(uc: Uc, err: BaseException) -> None:
    """As unicorn's own guard does: stop the emulation, `emu_start` raises `err`."""
    if uc._hook_exception is None:  # noqa: SLF001 (where emu_start looks)
        uc._hook_exception = err  # type: ignore[assignment]  # noqa: SLF001
    uc.emu_stop()
