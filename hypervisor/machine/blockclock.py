"""The block clock: exact retired-instruction counts without a hook on every instruction.

The C helper (`blockclock.c`, built by `clockbuild`) adds each translated block's instruction
count before the block runs and stops the CPU before a block that would cross the run's
deadline. This class makes that exact at every instruction:

* a deadline inside a block: the block is run again with a code hook bounded to it that
  stops after the remaining instructions (the block is recompiled for it, then once more
  without it: a block compiled before a hook was added never calls it);
* a stop that an I/O hook asks for inside a block (a timing port written, debug-exit, an I/O
  that must fault) would take effect only at the block's end: a block with port I/O before
  its last instruction gets, the first time it is seen, an empty C code hook on each
  instruction after an I/O (unicorn checks for a pending stop after every code hook), and is
  recompiled before it first runs;
* a stop asked for by a Python hook sets the helper's `stop` flag, so a block already chained
  to the stopping one is not counted;
* EIP is exact in MMIO callbacks only in code compiled under a memory hook: the machine
  leaves open bus and devices unmapped while it can (`mmio.py`); an access there stops the
  CPU before the instruction, `memory.hole_hit()` maps them, and the run goes on from it (a
  CPU write to CR0 stops the run before the next block, for `memory.paging_changed()`);
* mid-block counts (a fault, an I/O, a stop) are the running block's instructions before EIP,
  from capstone, cached by the block's bytes (self-modifying code changes them).
"""

from __future__ import annotations

import bisect
import ctypes
from collections.abc import Callable
from typing import Any, Protocol

import capstone
from unicorn import (
    UC_ERR_READ_UNMAPPED,
    UC_ERR_WRITE_UNMAPPED,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    Uc,
    UcError,
)
from unicorn.unicorn_py3.unicorn import uclib
from unicorn.x86_const import (
    UC_X86_REG_CR0,
    UC_X86_REG_CR3,
    UC_X86_REG_CR4,
    UC_X86_REG_EFLAGS,
    UC_X86_REG_EIP,
)

from hypervisor.machine.clockbuild import library
from hypervisor.machine.registers import OneRegister

NO_BLOCK = (1 << 64) - 1
NO_LIMIT = (1 << 64) - 1
MISS_STOP = 0x80000000
ENDS_STI = 0x40000000
ENDS_CR0 = 0x20000000
ENDS_CR = 0x10000000  # CR0, CR3 or CR4: the helper reads the paging registers again
_WHY_MISS = 2  # the helper stopped before a block Python must prepare (1: the deadline)
_WHY_WINDOW = 3  # the interrupt window opened (Machine.watch_interrupt_window)
_WHY_CR0 = 4  # a block wrote CR0 (watched while the holes are unmapped)
_UNMAPPED_DATA = (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED)
_TASK_SWITCHES = frozenset(("ljmp", "lcall", "iretd", "iret"))
_IO = frozenset(("in", "out", "insb", "insw", "insd", "outsb", "outsw", "outsd"))


class _Header(ctypes.Structure):
    """The first fields of `struct vclock` (blockclock.c): what Python reads and sets."""

    _fields_ = [
        ("base", ctypes.c_uint64),
        ("end", ctypes.c_uint64),
        ("deadline", ctypes.c_uint64),
        ("block", ctypes.c_uint64),
        ("block_size", ctypes.c_uint32),
        ("stop", ctypes.c_uint32),
        ("why", ctypes.c_uint32),
        ("step_left", ctypes.c_uint32),
        ("emu_stop", ctypes.c_void_p),
        ("miss", ctypes.c_void_p),
        ("cut", ctypes.c_void_p),
        ("ram", ctypes.c_void_p),
        ("ram_size", ctypes.c_uint64),
        ("reload", ctypes.c_uint32),
        ("arena_used", ctypes.c_uint32),
        ("reg_read", ctypes.c_void_p),
        ("eflags_id", ctypes.c_int32),
        ("watch_if", ctypes.c_uint32),
        ("after_sti", ctypes.c_uint32),
        ("shadow", ctypes.c_uint32),
        ("watch_cr0", ctypes.c_uint32),
        ("after_cr0", ctypes.c_uint32),
        ("mem_read", ctypes.c_void_p),
        ("cr0_id", ctypes.c_int32),
        ("cr3_id", ctypes.c_int32),
        ("cr4_id", ctypes.c_int32),
        ("hooked_at", ctypes.c_uint64),
        ("hooked_eflags", ctypes.c_uint64),
    ]


class MemoryMap(Protocol):
    """What the clock asks the machine about its memory map (mmio.py)."""

    @property
    def fast(self) -> bool:
        """The holes are unmapped: watch for CR0 writes."""
        ...

    def hole_hit(self) -> bool:
        """The CPU stopped before an access to an unmapped address: map the holes (True),
        or False if that is no hole (the error stands)."""
        ...

    def paging_changed(self) -> None:
        """CR0 was written: paging may be on now."""
        ...


_MISS = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint32)
_CUT = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint64)
_DISASM = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_32)


def _control_flags(code: bytes, address: int) -> int:
    """ENDS_CR0 and ENDS_CR for the instruction at the start of `code`: a MOV to CR0 (the
    one way paging comes on) or to CR3/CR4 (another address space, other page sizes), or
    a far jump, far call or IRET, which may switch tasks and load CR3."""
    for _, _, mnemonic, operands in _DISASM.disasm_lite(code, address, 1):
        # (capstone writes an indirect far jump or call as "jmp ptr [m]": no operand size)
        if mnemonic in _TASK_SWITCHES or operands.startswith("ptr ["):
            return ENDS_CR
        if mnemonic != "mov" or operands[:4] not in ("cr0,", "cr3,", "cr4,"):
            return 0
        return ENDS_CR | (ENDS_CR0 if operands.startswith("cr0") else 0)
    return 0


class BlockClock:
    """The block clock of one unicorn instance (see the module docstring)."""

    kind = "block"

    def __init__(self, uc: Uc, read: Callable[[int, int], bytes], ram: int, ram_size: int):
        lib = library()
        self._uc = uc
        self._read = read  # guest code bytes at a linear address, as the CPU fetches them
        self._lib = lib
        self._memory = ctypes.create_string_buffer(lib.vclock_sizeof())
        self._c = _Header.from_buffer(self._memory)
        self._address = ctypes.addressof(self._memory)
        # base, end, deadline, block and block_size read without ctypes' field descriptors
        # (a tracer asks `retired_before` at every instruction)
        octets = memoryview(self._memory).cast("B")
        self._words, self._block_size = octets[:32].cast("Q"), octets[32:36].cast("I")
        c = self._c
        c.emu_stop = ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value
        c.reg_read = ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value
        c.eflags_id = UC_X86_REG_EFLAGS
        c.mem_read = ctypes.cast(uclib.uc_mem_read, ctypes.c_void_p).value
        c.cr0_id, c.cr3_id, c.cr4_id = UC_X86_REG_CR0, UC_X86_REG_CR3, UC_X86_REG_CR4
        self._miss_callback = _MISS(self._on_miss)  # kept: the helper holds a raw pointer
        c.miss = ctypes.cast(self._miss_callback, ctypes.c_void_p).value
        self._cut_callback = _CUT(self._on_cut)
        c.cut = ctypes.cast(self._cut_callback, ctypes.c_void_p).value
        c.ram, c.ram_size, c.reload = ram, ram_size, 1
        c.block, c.deadline = NO_BLOCK, NO_LIMIT  # emu_start outside `run` is not limited
        self._blocks: dict[tuple[int, int], tuple[bytes, tuple[int, ...]]] = {}
        self._checked: set[int] = set()  # instructions after a port I/O that have a check hook
        self._unchecked: list[int] = []  # found by the last miss, hooked before the block runs
        self._doors: frozenset[str] = frozenset()  # mnemonics the owner stops before (stop_before)
        self._add_door: Callable[[int], None] = lambda address: None
        self._doored: set[int] = set()
        self._undoored: list[int] = []  # like _unchecked: doors wanted before the block runs
        self.exhausted = self.window_opened = False
        self.stepping = False
        # called after each emu_start: with paging on the machine puts back what unicorn's
        # clean-up leaves (marker.py), before this clock starts the CPU again
        self.after_emu_start: Callable[[], None] = lambda: None
        self._eip = OneRegister(uc, UC_X86_REG_EIP).read
        self.memory: MemoryMap | None = None
        self._hook(UC_HOOK_BLOCK, lib.vclock_block, 1, 0)

    def _hook(self, kind: int, function: Any, begin: int, end: int) -> int:
        handle = ctypes.c_size_t()
        status = uclib.uc_hook_add(
            self._uc._uch,
            ctypes.byref(handle),
            kind,
            ctypes.cast(function, ctypes.c_void_p),
            ctypes.c_void_p(self._address),
            ctypes.c_uint64(begin),
            ctypes.c_uint64(end),
        )
        if status:
            raise UcError(status)
        return handle.value

    # ------------------------------------------------------------------ counting
    def _decode(self, address: int, size: int) -> tuple[int, ...]:
        """Start addresses of the block's instructions (one more for undecodable bytes)."""
        code = self._read(address, size)
        known = self._blocks.get((address, size))
        if known is not None and known[0] == code:
            return known[1]
        starts: list[int] = []
        at = address
        for insn_address, insn_size, mnemonic, _ in _DISASM.disasm_lite(code, address):
            starts.append(insn_address)
            at = insn_address + insn_size
            if mnemonic.split()[-1] in _IO and at < address + size and at not in self._checked:
                self._unchecked.append(at)
            if mnemonic in self._doors and insn_address not in self._doored:
                self._undoored.append(insn_address)
        if at < address + size:  # capstone stopped: an instruction the CPU will fault on
            starts.append(at)
        self._blocks[(address, size)] = (code, tuple(starts))
        return self._blocks[(address, size)][1]

    def _on_miss(self, address: int, size: int) -> int:
        starts = self._decode(address, size)
        code = self._blocks[(address, size)][0]
        last = code[starts[-1] - address :]
        count = len(starts) | (ENDS_STI if last == b"\xfb" else 0)
        count |= _control_flags(last, starts[-1])
        return count | MISS_STOP if self._unchecked or self._undoored else count

    def _on_cut(self, block: int, size: int, address: int) -> int:
        """The running block was abandoned at `address` (blockclock.c, check_cut): its
        instructions before it ran, and the one there is counted as begun, as unicorn's own
        counter does (it counts that instruction again when it runs on its own)."""
        starts = self._blocks[(block, size)][1]  # the code as it ran, before the store
        return bisect.bisect_left(starts, address) + 1

    def begun_at(self, eip: int) -> int:
        """Like unicorn's counter with the CPU at `eip`: instructions of the run begun, the
        one at `eip` included (the running block's own instructions before it, if `eip` is
        inside that block). A code hook, which is told EIP, asks this at every instruction."""
        words = self._words
        block, size = words[3], self._block_size[0]
        if block == NO_BLOCK or not block <= eip < block + size:
            return words[1] + 1
        # the helper checked the block's bytes as it entered it: the decode kept at its miss
        # is the code running (only a store into the block itself changes it, and that ends
        # the block: blockclock.c, check_cut)
        known = self._blocks.get((block, size))
        starts = known[1] if known is not None else self._decode(block, size)
        return words[0] + bisect.bisect_left(starts, eip) + 1

    def retired_before(self, eip: int) -> int:
        """Instructions of the run that completed before `eip`."""
        return self.begun_at(eip) - 1

    def read(self) -> int:
        """Like unicorn's counter: instructions begun, the one at EIP included."""
        return self.begun_at(self._eip())

    def stop_count(self, completes: bool, eip_past: bool, begun: bool = True) -> int:
        """Instructions retired at a stop a hook asks for now: `completes`, the current
        instruction will have run (an I/O); `eip_past`, EIP is already after it (INT n).
        (`begun`: False when the fetch at EIP faulted; its block never started, so the
        count is the same.)"""
        return self.retired_before(self._eip()) + (completes and not eip_past)

    def settled(self, faulted: bool) -> int:
        """Instructions retired when the run ended by itself (a fault, HLT, the end address)."""
        return self.retired_before(self._eip())

    # ------------------------------------------------------------------ running
    def run(self, eip: int, until: int, count: int) -> UcError | None:
        """Run from `eip` until a hook stops the CPU or exactly `count` instructions retired
        (0: no limit); `exhausted` says which."""
        c, uc = self._c, self._uc
        deadline = count or NO_LIMIT
        c.watch_cr0 = self.memory is not None and self.memory.fast
        c.after_cr0 = 0
        c.base = c.end = 0
        c.deadline = deadline
        c.block = NO_BLOCK
        self.exhausted = self.window_opened = False
        step_hook: int | None = None
        stepped = (NO_BLOCK, 0)  # the block run again to finish inside it
        self.stepping = False
        try:
            while True:
                c.stop = c.why = 0
                c.reload = 1  # the monitor may have changed paging between two emu_starts
                try:
                    uc.emu_start(eip, until)
                except UcError as err:
                    if not self._hole_hit(err):
                        return err
                    eip = self._eip()
                    continue
                finally:
                    self.after_emu_start()
                if not c.why:
                    return None
                eip = self._eip()
                if c.why == _WHY_CR0:
                    assert self.memory is not None, "CR0 is watched for the memory map"
                    self.memory.paging_changed()
                    c.watch_cr0 = self.memory.fast
                    continue
                if c.why == _WHY_WINDOW:
                    self.window_opened = True
                    return None
                if c.why == _WHY_MISS:
                    self._add_checks(c.block, c.block_size)
                    # compiled again with its new hooks, the block may end elsewhere: not a
                    # cut of the one stopped before (blockclock.c, check_cut)
                    c.block = NO_BLOCK
                    continue
                if step_hook is not None or c.base == deadline:
                    self.exhausted = True
                    return None
                # the deadline falls inside the block at EIP: run just its first instructions
                stepped = (c.block, c.block_size)
                last = c.block + c.block_size - 1
                step_hook = self._hook(UC_HOOK_CODE, self._lib.vclock_step, c.block, last)
                self._recompile(*stepped)
                c.step_left = deadline - c.base
                c.deadline = NO_LIMIT
                self.stepping = True
        finally:
            self.stepping = False
            if step_hook is not None:
                uclib.uc_hook_del(uc._uch, ctypes.c_size_t(step_hook))
                self._recompile(*stepped)
            c.deadline = NO_LIMIT

    def _hole_hit(self, err: UcError) -> bool:
        """An access to an unmapped hole stopped the CPU before the instruction at EIP: once
        the machine has mapped the holes, go on from it as if it had not stopped."""
        if err.errno not in _UNMAPPED_DATA or self.memory is None or not self.memory.hole_hit():
            return False
        c = self._c
        eip = self._eip()
        if c.hooked_at == eip:  # unicorn lost the lazy flags the hook saw (blockclock.c)
            self._uc.reg_write(UC_X86_REG_EFLAGS, c.hooked_eflags)
        c.end = self.retired_before(eip)  # the instructions before it retired
        c.block = NO_BLOCK
        c.after_sti = c.shadow  # the STI shadow lets the instruction through once more
        c.watch_cr0 = self.memory.fast
        if self.stepping:  # the step hook counted the instruction, which runs again
            c.step_left += 1
        return True

    def _add_checks(self, block: int, size: int) -> None:
        for address in self._unchecked:
            self._hook(UC_HOOK_CODE, self._lib.vclock_check, address, address)
            self._checked.add(address)
        self._unchecked.clear()
        for address in self._undoored:
            self._add_door(address)
            self._doored.add(address)
        self._undoored.clear()
        self._recompile(block, size)

    def stop_before(self, mnemonics: frozenset[str], add_door: Callable[[int], None]) -> bool:
        """Call `add_door(address)` once for each instruction with one of these mnemonics,
        as new blocks are decoded (before they first run): how the machine stops before
        instructions unicorn cannot hook."""
        self._doors, self._add_door = mnemonics, add_door
        return True

    def _recompile(self, block: int, size: int) -> None:
        if block != NO_BLOCK:
            self._uc.ctl_remove_cache(block, block + max(size, 1))

    def watch_window(self, on: bool, after_sti: bool | None = None) -> bool:
        """Stop as soon as EFLAGS.IF is set (the helper looks at each block's start).
        `after_sti` (a restored snapshot): the last instruction run was STI, whose shadow
        comes first; otherwise only what runs from now on counts, as when the machine's
        own hook is added, and asking again while watching changes nothing."""
        c = self._c
        if after_sti is not None:
            c.after_sti = on and after_sti
        elif on and not c.watch_if:
            c.after_sti = 0
        c.watch_if = on
        return True

    def window(self) -> tuple[bool, int | None]:
        """(watching, 1 if the last instruction run was STI): a snapshot's `window`."""
        return bool(self._c.watch_if), 1 if self._c.after_sti else None

    def at_deadline(self) -> bool:
        """Asked by the machine's Python code hooks, which run before the step hook: is
        the instruction about to run the one the step hook stops at (so it never runs)?"""
        return self.stepping and self._c.step_left == 0

    def stop(self) -> None:
        """A hook stops the CPU: no block after this one may be counted."""
        self._c.stop = 1
        self._uc.emu_stop()

    def forget(self) -> None:
        """Code changed where the helper cannot see it (monitor memory, a restored
        snapshot): forget every block count."""
        self._lib.vclock_forget(ctypes.c_void_p(self._address))
        self._blocks.clear()
