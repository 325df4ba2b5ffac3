"""Reading and writing the CPU's registers fast enough to do it on every trap and after every
traced instruction.

Unicorn's Python `reg_read`, `reg_write` and their batch forms pick a register class per id
in Python and build ctypes objects per call: `reg_read_batch` spends ~70 µs on 16 registers
here, `reg_read` ~4 µs on one. A recording reads the registers once per instruction and the
monitor reads and writes them on every trap, so these call unicorn's C functions directly
with arrays built once and without ctypes' argument conversion (half a microsecond for
18 registers, about half of what the same call costs with the binding's argument types).
Unicorn writes only a
register's own width (4 bytes, 2 for a selector) into its slot; the slots are zeroed once at
allocation and nothing else writes them. Only registers of at most 32 bits go through here.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib

from hypervisor.machine.cpu import STATE_FIELDS, STATE_REG_IDS

_STATUS = ctypes.CFUNCTYPE(ctypes.c_int)  # an int status; arguments as they are passed


def untyped(function: Any) -> Callable[..., int]:
    """A C function of unicorn's library without the binding's argument types: ctypes then
    converts and checks nothing per call (half the cost of a batch read), so every argument
    must already be the C object it takes (a `c_void_p` handle, arrays, `byref`)."""
    address = ctypes.cast(function, ctypes.c_void_p).value
    assert address is not None, "a function of a loaded library"
    return _STATUS(address)


_read_batch, _write_batch = untyped(uclib.uc_reg_read_batch), untyped(uclib.uc_reg_write_batch)
_read_one, _write_one = untyped(uclib.uc_reg_read), untyped(uclib.uc_reg_write)


class RegisterRefused(Exception):
    """Unicorn refused a register write (e.g. a selector the CPU will not load)."""

    def __init__(self, reg_id: int, status: int) -> None:
        which = f"register {reg_id}" if reg_id >= 0 else "a register of a batch"
        super().__init__(f"unicorn error {status} writing {which}")
        self.reg_id, self.status = reg_id, status


class RegisterBatch:
    """A fixed list of registers, read and written in one C call each."""

    def __init__(self, uc: Uc, reg_ids: Sequence[int]) -> None:
        count = len(reg_ids)
        self._count = count
        self._ids = (ctypes.c_int * count)(*reg_ids)
        self._values = (ctypes.c_uint32 * count)()
        base = ctypes.addressof(self._values)
        self._pointers = (ctypes.c_void_p * count)(*(base + 4 * i for i in range(count)))
        self._unpack = struct.Struct(f"={count}I").unpack
        self._bytes = memoryview(self._values).cast("B")
        handle = ctypes.c_void_p(uc._uch.value)  # noqa: SLF001 (no batch access to a buffer)
        # bound once: a recording calls this at every traced instruction
        arguments = (handle, self._ids, self._pointers, ctypes.c_int(count))
        self._read_batch = partial(_read_batch, *arguments)
        self._write_batch = partial(_write_batch, *arguments)

    def raw(self) -> bytes:
        """The registers as native-order 32-bit words: a recording diffs these bytes
        (building a tuple from the ctypes array costs more than reading the registers)."""
        status = self._read_batch()
        if status:
            raise RuntimeError(f"uc_reg_read_batch failed with unicorn error {status}")
        return self._bytes.tobytes()

    def read(self) -> tuple[int, ...]:
        return self._unpack(self.raw())

    def write(self, values: Sequence[int]) -> None:
        """Raises RegisterRefused where the CPU refuses a value (the ones before it are
        written)."""
        self._values[:] = values  # type: ignore[call-overload]  # (any sequence: no list made)
        status = self._write_batch()
        if status:
            raise RegisterRefused(-1, status)


class RegisterReader(RegisterBatch):
    """`read()` returns the `CpuState` fields (STATE_FIELDS order) of one unicorn CPU."""

    fields = STATE_FIELDS

    def __init__(self, uc: Uc) -> None:
        super().__init__(uc, STATE_REG_IDS)


class OneRegister:
    """One register read and written the same way (bare metal asks for CS, the CPL, at every
    traced instruction; a monitor reads EIP and CR2 and loads selectors on every trap)."""

    def __init__(self, uc: Uc, reg_id: int) -> None:
        self._handle = ctypes.c_void_p(uc._uch.value)  # noqa: SLF001
        self._id = ctypes.c_int(reg_id)
        self._value = ctypes.c_uint32()
        self._pointer = ctypes.byref(self._value)

    def read(self) -> int:
        status = _read_one(self._handle, self._id, self._pointer)
        if status:
            raise RuntimeError(f"uc_reg_read failed with unicorn error {status}")
        return self._value.value

    def write(self, value: int) -> None:
        """Raises RegisterRefused where the CPU refuses the value."""
        self._value.value = value
        status = _write_one(self._handle, self._id, self._pointer)
        if status:
            raise RegisterRefused(self._id.value, status)
