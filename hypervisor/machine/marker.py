"""The CPU's "exception in progress" marker, and putting it back after a run with paging on.

QEMU (inside unicorn) remembers the last fault it raised (`old_exception`) until the exception
is delivered, to turn a second fault into #DF (fact 3); unicorn never delivers a hooked one.
vmlab re-enters from a clean context after each delivery, which clears it. But with paging on,
unicorn's clean-up at the end of every `emu_start` looks up the end address in the guest's page
tables (measured on 2.1.4): where the guest has not mapped it, that lookup faults inside
unicorn, leaving CR2 = end - 1 and the marker at #PF. The next real #PF (or #GP) would then be
reported as #DF. `clear_after_run` puts the marker back to "none" (and CR2 to the guest's).

The marker's place in unicorn's saved context is not part of its API, so it is found once per
process by calibration, as `retired.py` finds the instruction counter: the one 32-bit word that
reads -1 in a clean context, 0 after a divide error and 13 after a #GP.
"""

from __future__ import annotations

import ctypes
import struct
from functools import cache

from unicorn import UC_ARCH_X86, UC_HOOK_INTR, UC_MODE_32, Uc
from unicorn import x86_const as x

from hypervisor.machine.retired import UnsupportedUnicorn

_NONE = -1


def _words(uc: Uc) -> list[int]:
    context = uc.context_save()
    raw = ctypes.string_at(context.context, context.size)
    return list(struct.unpack(f"<{len(raw) // 4}i", raw[: len(raw) // 4 * 4]))


@cache
def marker_offset() -> int:
    """Byte offset of `old_exception` in a saved context (calibrated once)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    uc.mem_map(0, 0x10000)
    uc.mem_write(0x800, struct.pack("<QQQ", 0, 0x00CF9B000000FFFF, 0x00CF93000000FFFF))
    uc.reg_write(x.UC_X86_REG_GDTR, (0, 0x800, 0x17, 0))
    uc.reg_write(x.UC_X86_REG_CR0, 0x11)
    uc.reg_write(x.UC_X86_REG_CS, 0x08)
    uc.reg_write(x.UC_X86_REG_SS, 0x10)
    uc.hook_add(UC_HOOK_INTR, lambda u, n, d: u.emu_stop())
    clean = uc.context_save()
    baseline = _words(uc)
    seen = []
    # div ecx with ECX = 0: #DE (0); mov ds, ax with a selector past the GDT: #GP (13)
    for code in (b"\x31\xc9\xf7\xf1", b"\x66\xb8\x34\x12\x8e\xd8"):
        uc.context_restore(clean)
        uc.mem_write(0x1000, code)
        uc.ctl_remove_cache(0x1000, 0x1000 + len(code))
        uc.emu_start(0x1000, 0x2000, count=10)
        seen.append(_words(uc))
    found = [
        i
        for i, value in enumerate(baseline)
        if value == _NONE and seen[0][i] == 0 and seen[1][i] == 13
    ]
    if len(found) != 1:
        raise UnsupportedUnicorn(
            "cannot locate unicorn's exception marker in this unicorn build; "
            "vmlab needs unicorn 2.1.x (see pyproject.toml)"
        )
    return 4 * found[0]


def clear_after_run(uc: Uc, cr2: int) -> None:
    """No exception in progress, and CR2 = `cr2`, as the CPU is between two instructions."""
    context = uc.context_save()
    ctypes.c_int32.from_address((context.context.value or 0) + marker_offset()).value = _NONE
    context.reg_write(x.UC_X86_REG_CR2, cr2)
    uc.context_restore(context)
