"""A per-instruction code hook with no Python layer between unicorn and the callback.

Unicorn's `hook_add` wraps each callback in two Python frames (an exception guard and an
argument adapter) and passes the `Uc` and user data along: ~0.3 µs an instruction, a tenth of
what a traced instruction costs. This registers a ctypes callback that calls `callback(address,
size)` directly, keeping unicorn's contract for errors: an exception stops the emulation and
`emu_start` raises it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from unicorn import UC_HOOK_CODE, Uc, UcError
from unicorn.unicorn_py3.unicorn import uclib

_CODE_HOOK = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_void_p
)


class CodeHook:
    """`callback(address, size)` before every instruction of `uc`, until `remove`."""

    def __init__(self, uc: Uc, callback: Callable[[int, int], None]) -> None:
        def call(_: int, address: int, size: int, __: int) -> None:
            try:
                callback(address, size)
            except BaseException as err:  # as unicorn's own guard: stop, raise from emu_start
                if uc._hook_exception is None:  # noqa: SLF001 (where emu_start looks)
                    uc._hook_exception = err  # type: ignore[assignment]  # noqa: SLF001
                uc.emu_stop()

        self._uc = uc
        self._function = _CODE_HOOK(call)  # kept alive as long as the hook
        self._handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            uc._uch,  # noqa: SLF001 (unicorn's Python API adds its own layers)
            ctypes.byref(self._handle),
            UC_HOOK_CODE,
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
