"""Reading the CPU's registers fast enough to do it after every traced instruction and trap.

Unicorn's Python `reg_read_batch` spends ~70 µs on 16 registers here (it picks a register
class per id in Python and builds ctypes arrays per call); a recording reads the registers
once per instruction and the monitor on every trap, so this calls `uc_reg_read_batch`
directly with arrays built once: ~6 µs. Unicorn writes only a register's own width
(4 bytes, 2 for a selector) into its slot; the slots are zeroed once at allocation and
nothing else writes them.
"""

from __future__ import annotations

import ctypes
import struct
from functools import partial

from unicorn import Uc
from unicorn.unicorn_py3.unicorn import uclib

from hypervisor.machine.cpu import STATE_FIELDS, STATE_REG_IDS


class RegisterReader:
    """`read()` returns the `CpuState` fields (STATE_FIELDS order) of one unicorn CPU."""

    fields = STATE_FIELDS

    def __init__(self, uc: Uc) -> None:
        count = len(STATE_REG_IDS)
        self._uc = uc
        self._count = count
        self._ids = (ctypes.c_int * count)(*STATE_REG_IDS)
        self._values = (ctypes.c_uint32 * count)()
        base = ctypes.addressof(self._values)
        self._pointers = (ctypes.c_void_p * count)(*(base + 4 * i for i in range(count)))
        self._unpack = struct.Struct(f"={count}I").unpack
        # bound once: a recording calls this at every traced instruction
        handle = uc._uch  # noqa: SLF001 (unicorn offers no batch read into a buffer)
        self._read_batch = partial(
            uclib.uc_reg_read_batch, handle, self._ids, self._pointers, count
        )

    def raw(self) -> bytes:
        """The registers as 16 native-order 32-bit words: a recording diffs these bytes
        (building a tuple from the ctypes array costs more than reading the registers)."""
        status = self._read_batch()
        if status:
            raise RuntimeError(f"uc_reg_read_batch failed with unicorn error {status}")
        return bytes(self._values)

    def read(self) -> tuple[int, ...]:
        return self._unpack(self.raw())


class OneRegister:
    """One register read the same way: unicorn's `reg_read` spends ~4 µs on a selector,
    this ~1 µs (bare metal asks for CS, the CPL, at every traced instruction)."""

    def __init__(self, uc: Uc, reg_id: int) -> None:
        self._uc = uc
        self._id = reg_id
        self._value = ctypes.c_uint32()
        self._pointer = ctypes.byref(self._value)

    def read(self) -> int:
        status = uclib.uc_reg_read(self._uc._uch, self._id, self._pointer)  # noqa: SLF001
        if status:
            raise RuntimeError(f"uc_reg_read failed with unicorn error {status}")
        return self._value.value
