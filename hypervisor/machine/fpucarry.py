"""The x87/SSE state across a world switch, and the state it starts in.

A world switch restores a clean CPU context saved once per ring (fact 1), which clears the
exception marker (fact 3) but also puts back the FPU registers as they were when the
template was saved: every trap, callout and interrupt delivery would reset the guest's FPU
stack, control word and XMM registers in mid-computation (a kernel's FXSAVE then saves
another state than the one it computed with). The monitor itself never uses the FPU, so the
live state is the guest's in every mode: an entry copies it into the template before
restoring it.

The FPU's place in unicorn's saved context is not part of its API, so it is found once per
process by calibration, as `marker.py` finds the exception marker: QEMU keeps the x87 stack
top first and XMM7 last, with the control, status and tag words, the stack, the
soft-float status and MXCSR between; the span runs from the byte a write of the stack top
changes to the last byte a write of XMM7 changes.

A fresh unicorn CPU has a control word of 0 (every FPU exception unmasked), all eight x87
registers tagged valid and MXCSR 0; QEMU's (and a real CPU's after FNINIT) has 0x037F,
an empty stack and MXCSR 0x1F80. `reset` gives a machine QEMU's, so that a kernel that
uses the FPU without FNINIT (and FXSAVE before any x87 instruction) sees what it sees there.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache, partial

from unicorn import UC_ARCH_X86, UC_MODE_32, Uc
from unicorn import x86_const as x
from unicorn.unicorn import UcContext
from unicorn.unicorn_py3.unicorn import uclib

from hypervisor.machine.registers import untyped
from hypervisor.machine.retired import UnsupportedUnicorn

RESET_CONTROL, RESET_TAG, RESET_MXCSR = 0x037F, 0xFFFF, 0x1F80  # QEMU's x86_cpu_reset
_TOP_7 = 7 << 11  # the status word's stack-top field
_MAX_SPAN = 4096  # x87, SSE and QEMU's soft-float status: well under a page

_context_save = untyped(uclib.uc_context_save)


def _raw(uc: Uc, context: UcContext) -> bytes:
    """The CPU's state saved into `context` (one allocation: its header stays the same)."""
    uc.context_update(context)
    return ctypes.string_at(context.context, context.size)


def _changed(before: bytes, after: bytes) -> list[int]:
    return [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]


@cache
def fpu_span() -> tuple[int, int]:
    """(offset, size) of the FPU and SSE state in a saved context (calibrated once)."""
    uc = Uc(UC_ARCH_X86, UC_MODE_32)
    context = uc.context_save()
    clean = _raw(uc, context)
    uc.reg_write(x.UC_X86_REG_FPSW, _TOP_7)
    top = _changed(clean, after_top := _raw(uc, context))
    uc.reg_write(x.UC_X86_REG_XMM7, (1 << 128) - 1)
    xmm7 = _changed(after_top, _raw(uc, context))
    if len(top) != 1 or len(xmm7) != 16 or not 0 < xmm7[-1] - top[0] < _MAX_SPAN:
        raise UnsupportedUnicorn(
            "cannot locate the FPU state in unicorn's saved context in this unicorn build; "
            "vmlab needs unicorn 2.1.x (see pyproject.toml)"
        )
    return top[0], xmm7[-1] + 1 - top[0]


def reset(uc: Uc) -> None:
    """The FPU as QEMU's CPU comes out of reset (FNINIT's state, MXCSR's masks set)."""
    uc.reg_write(x.UC_X86_REG_FPCW, RESET_CONTROL)
    uc.reg_write(x.UC_X86_REG_FPTAG, RESET_TAG)
    uc.reg_write(x.UC_X86_REG_MXCSR, RESET_MXCSR)


class FpuCarry:
    """Copies the CPU's live FPU state into a context about to be restored (one foreign
    call and one copy, bound once per template: it runs on every trap's world switch)."""

    def __init__(self, uc: Uc) -> None:
        self._offset, self._size = fpu_span()
        self._live = uc.context_save()  # a context kept to save the live state into
        handle = ctypes.c_void_p(uc._uch.value)  # noqa: SLF001 (a bare foreign call)
        self._save = partial(_context_save, handle, self._live.context)
        self._source = (self._live.context.value or 0) + self._offset
        self._copies: dict[int, Callable[[], int]] = {}  # id(template) -> its copy

    def into(self, template: UcContext) -> None:
        """`template` gets the live FPU state; the rest of it is left as it is. (Templates
        live as long as their machine: `id` names one.)"""
        status = self._save()
        if status:
            raise RuntimeError(f"uc_context_save failed with unicorn error {status}")
        copy = self._copies.get(id(template))
        if copy is None:
            target = (template.context.value or 0) + self._offset
            copy = self._copies[id(template)] = partial(
                ctypes.memmove, target, self._source, self._size
            )
        copy()
