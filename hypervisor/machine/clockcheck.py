"""The block clock's start-up self-test: it must agree with unicorn's own counter.

Like `retired.py`'s calibration, it refuses (and the process falls back to counting each
instruction) rather than trust a unicorn build that behaves otherwise than the one measured:
a loop is stopped at deadlines inside and at the ends of blocks, a port write stops the CPU
right after itself, a fault counts only the instructions before it, and a stop asked for at
a block's end does not count the chained next block.
"""

from __future__ import annotations

import ctypes
from functools import cache

from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_INSN,
    UC_HOOK_INTR,
    UC_MODE_32,
    UC_PROT_ALL,
    Uc,
)
from unicorn import x86_const as x

from hypervisor.machine.blockclock import BlockClock
from hypervisor.machine.clockbuild import ClockUnavailable, library

_RAM = 0x10000
_CODE = 0x1000
# loop: inc eax; add ebx, eax; out 0x80, al; xor ecx, ebx; inc edx; cmp edx, 50;
#       jne loop; ud2
_PROGRAM = b"\x40\x01\xc3\xe6\x80\x31\xd9\x42\x83\xfa\x32\x75\xf3\x0f\x0b"
_LOOP = 7  # instructions per iteration


def _machine(stop_after_out: int | None) -> tuple[Uc, BlockClock, ctypes.Array]:
    """A CPU with the test program and a block clock (and its RAM, kept alive by callers)."""
    ram = ctypes.create_string_buffer(_RAM)
    base = ctypes.addressof(ram)
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map_ptr(0, _RAM, UC_PROT_ALL, base)
    ctypes.memmove(base + _CODE, _PROGRAM, len(_PROGRAM))
    clock = BlockClock(uc, lambda a, n: ctypes.string_at(base + a, n), base, _RAM)
    outs = [0]

    def on_out(uc: Uc, port: int, size: int, value: int, _: object) -> None:
        outs[0] += 1
        if outs[0] == stop_after_out:
            clock.stop()

    uc.hook_add(UC_HOOK_INSN, on_out, None, 1, 0, x.UC_X86_INS_OUT)
    uc.hook_add(UC_HOOK_INTR, lambda uc, n, _: clock.stop())
    return uc, clock, ram


def _fail(what: str) -> None:
    raise ClockUnavailable(f"self-test failed: {what}")


@cache
def self_test() -> None:
    """Raise ClockUnavailable unless the block clock is exact on this unicorn build."""
    library()
    for deadline in (1, 3, 6, 7, 8, 100, 349):
        uc, clock, _ram = _machine(None)
        clock.run(_CODE, 0xFFFFFFF0, deadline)
        edx, eip = uc.reg_read(x.UC_X86_REG_EDX), uc.reg_read(x.UC_X86_REG_EIP)
        whole, part = divmod(deadline, _LOOP)
        if not clock.exhausted or edx != whole + (part >= 5):
            _fail(f"deadline {deadline} not met exactly (edx={edx}, eip={eip:#x})")
    uc, clock, _ram = _machine(stop_after_out=3)
    clock.run(_CODE, 0xFFFFFFF0, 0)
    if uc.reg_read(x.UC_X86_REG_EIP) != _CODE + 5 or uc.reg_read(x.UC_X86_REG_EDX) != 2:
        _fail("a stop asked for by a port write ran past the write")
    uc, clock, _ram = _machine(None)
    clock.run(_CODE, 0xFFFFFFF0, 0)
    if clock.retired_before(uc.reg_read(x.UC_X86_REG_EIP)) != 50 * _LOOP:
        _fail("a fault counted instructions it did not retire")
