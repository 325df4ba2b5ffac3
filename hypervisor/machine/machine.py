"""The physical machine: one x86 CPU on unicorn, its RAM, an I/O bus, and open bus elsewhere.

It knows nothing of virtual machines. It offers what a monitor (or bare metal) needs:

* entry at a chosen CPL through context templates — unicorn cannot change CPL by writing
  registers, and never marks a hooked exception as delivered, so every entry after a fault
  restores a clean saved context of the right CPL and writes the registers on top
  (docs/unicorn-facts.md, facts 1 and 3);
* `run()` for a slice of exactly N instructions, returning why it stopped and how many
  instructions retired (facts 2 and 4, `retired.py`);
* port I/O forwarded to the owner (unicorn never applies the IOPL rule; the owner does);
* memory outside RAM as open bus: reads give all ones, writes are dropped, each reported.

(Longer than this project's usual module: every hook and the memory map share the state of
one unicorn instance; the MMU and the board, when they come, take their parts out.)
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from operator import attrgetter
from typing import Protocol

from unicorn import (
    UC_ARCH_X86,
    UC_CTL_IO_WRITE,
    UC_CTL_TB_REMOVE_CACHE,
    UC_ERR_FETCH_PROT,
    UC_ERR_FETCH_UNMAPPED,
    UC_HOOK_CODE,
    UC_HOOK_INSN,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_MEM_FETCH_PROT,
    UC_HOOK_MEM_FETCH_UNMAPPED,
    UC_HOOK_MEM_READ,
    UC_HOOK_MEM_WRITE_PROT,
    UC_MODE_32,
    UC_PROT_ALL,
    UC_PROT_EXEC,
    UC_PROT_READ,
    UC_PROT_WRITE,
    Uc,
    UcError,
)
from unicorn import x86_const as x
from unicorn.unicorn import UcContext
from unicorn.unicorn_py3.unicorn import uclib

from hypervisor.isa import MAX_INSN_SIZE, decode
from hypervisor.machine import cpumodel, fpucarry
from hypervisor.machine.blockclock import BlockClock
from hypervisor.machine.cancel import CANCEL
from hypervisor.machine.clock import new_clock
from hypervisor.machine.clockbuild import ClockKind
from hypervisor.machine.codehook import CodeHook, InterruptHook
from hypervisor.machine.cpu import (
    CR0_ET,
    CR0_PE,
    CR0_PG,
    EFLAGS_IF,
    STATE_FIELDS,
    STATE_REG_IDS,
    CpuState,
    SystemState,
)
from hypervisor.machine.dirtylog import DirtyLog
from hypervisor.machine.fpucarry import FpuCarry
from hypervisor.machine.hostram import PAGE, HostRam, RamPool, RamSlice
from hypervisor.machine.interrupts import VEC_PF
from hypervisor.machine.ioport import IoBus
from hypervisor.machine.marker import clear_after_run
from hypervisor.machine.mmio import MmioRange, MmioSpace
from hypervisor.machine.msr import ApicBase
from hypervisor.machine.paging import LinearMemory, PagingRegisters, fetch_faulted
from hypervisor.machine.registers import (
    OneRegister,
    RegisterBatch,
    RegisterReader,
    RegisterRefused,
    untyped,
)
from hypervisor.machine.watchdog import LIMIT, WATCHDOG

MONITOR_BASE = 0xFFC00000
"""Where a monitor maps its own memory in the address space it shares with a guest (top 4 MiB,
as VMware's monitor did)."""

_UNTIL = 0xFFFFFFF0  # an address no guest reaches: emu_start needs an end address
_vmem_read = untyped(uclib.uc_vmem_read)  # (uc, address, prot, bytes, size): through the MMU
_FETCH = ctypes.c_int(UC_PROT_EXEC)

INTERRUPT_TRAPS = {3, 4}  # INT3 and INTO report EIP after the instruction, like INT n


class ExitKind(Enum):
    COUNT = "count"  # the slice's instruction count was used up
    EXCEPTION = "exception"  # a fault or INT n reached the machine (vector set)
    HALT = "halt"  # HLT executed at CPL 0
    STOP = "stop"  # the owner asked to stop (a port write that must be acted on)
    DOOR = "door"  # translated code called the monitor (address set)
    FETCH_FAULT = "fetch_fault"  # instruction fetch outside RAM
    ERROR = "error"  # unicorn refused to go on


@dataclass(frozen=True, slots=True)
class Exit:
    kind: ExitKind
    retired: int
    vector: int | None = None
    is_trap: bool = False  # INT n / INT3 / INTO: EIP is already past the instruction
    address: int | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """A machine's state between two runs (see `Machine.snapshot`)."""

    cpu: UcContext  # unicorn's saved CPU context
    ram: bytes
    monitor: tuple[tuple[int, bytes], ...]  # (address, contents) per monitor memory range
    protected: frozenset[int]  # write-protected RAM pages (fact 7)
    aliases: tuple[tuple[int, int], ...]  # (monitor address, RAM page) aliased there
    window: tuple[bool, int | None]  # watching for the interrupt window, last EIP seen


class MachineOwner(Protocol):
    """What the machine asks of whoever runs code on it (bare metal or a monitor)."""

    def port_in(self, port: int, size: int) -> int: ...

    def port_out(self, port: int, size: int, value: int) -> None: ...

    def memory_violation(self, kind: str, address: int, size: int, value: int) -> None: ...

    def code_page_written(self, address: int, size: int, stored: bool = False) -> None: ...

    def time_stamp(self) -> int: ...

    def instruction_clock(self) -> int: ...

    def model_specific_registers(self) -> dict[int, int]: ...

    def local_apic(self) -> ApicBase: ...


class EntryError(Exception):
    """The CPU refused a register value while entering the guest (e.g. a bad selector)."""


class Machine:
    """One CPU with its own RAM slice of host RAM."""

    def __init__(
        self,
        ram_size: int = 4 << 20,
        host: RamPool | None = None,
        name: str = "vm",
        clock: ClockKind | None = None,
    ):
        self.host: RamPool = host or HostRam(ram_size)
        self.ram: RamSlice = self.host.allocate(ram_size, name)
        self.ram_size = ram_size
        self.io = IoBus()
        self.owner: MachineOwner | None = None
        self.uc = Uc(UC_ARCH_X86, UC_MODE_32)
        fpucarry.reset(self.uc)
        self._fpu = FpuCarry(self.uc)  # the guest's FPU state across world switches
        self._ram_pointer = ram = self.host.pointer(self.ram)  # host RAM never moves
        # read without a foreign call (the tracer reads code at every instruction)
        self._ram_view = memoryview((ctypes.c_char * ram_size).from_address(ram)).cast("B")
        self.uc.mem_map_ptr(0, ram_size, UC_PROT_ALL, ram)
        # the clock reads code where the CPU fetches it (paging: the fetch must translate)
        self.clock = new_clock(self.uc, self.code, ram, ram_size, clock)
        if isinstance(self.clock, BlockClock):  # it may start the CPU several times a run
            self.clock.after_emu_start = self._clear_paging_leftovers
        self.counter = self.clock  # instructions begun in the current/last run
        self.registers = RegisterReader(self.uc)
        # the registers every trap reads or writes, past unicorn's per-call Python layer
        self._cs = OneRegister(self.uc, x.UC_X86_REG_CS)
        self.read_eip = OneRegister(self.uc, x.UC_X86_REG_EIP).read
        self._cr0 = OneRegister(self.uc, x.UC_X86_REG_CR0)
        self._cr2_reg = OneRegister(self.uc, x.UC_X86_REG_CR2)
        self._paging = RegisterBatch(self.uc, _PAGING_REGS)
        self._cr0_cr2 = RegisterBatch(self.uc, (x.UC_X86_REG_CR0, x.UC_X86_REG_CR2))
        self._handle = ctypes.c_void_p(self.uc._uch.value)  # noqa: SLF001 (for _vmem_read)
        self._fetched = ctypes.create_string_buffer(MAX_INSN_SIZE)
        # The registers of `state()` as `RegisterReader.raw` gives them, and CR0 in one word
        # more: what the tracer needs at every instruction, in one call (bound as it is: a
        # method around it would be a Python call more per traced instruction).
        self.trace_registers = RegisterBatch(self.uc, (*STATE_REG_IDS, x.UC_X86_REG_CR0)).raw
        self._entry = {reg: OneRegister(self.uc, reg) for _, reg in _ENTRY_SEGMENTS}
        self._plain = RegisterBatch(self.uc, [reg for _, reg in _PLAIN_REGS])
        self._entry_batch = RegisterBatch(self.uc, [reg for _, reg in _ENTRY_REGS])
        handle = self.uc._uch  # noqa: SLF001 (foreign calls bound once: each trap makes them)
        self._remove_cache = partial(uclib.uc_ctl, handle)
        self._restore: dict[int, Callable[[], int]] = {}  # CPL -> restore of its template
        self._sealed = False
        self._cancelled = False  # stopped by CANCEL (Ctrl-C) during the last run
        self._mmio: MmioSpace | None = None  # open bus and devices, made when sealed
        self.monitor_pages: set[int] = set()
        # Monitor memory is host memory the monitor writes directly (write_monitor): where
        # the guest may not write, unicorn's own mem_write unprotects and protects the range
        # again, flushing the TLB, ~8 µs a write (the shadow GDT changes view on every
        # system call). Page -> its host address (read-only monitor pages: no RAM alias).
        self._monitor_host: dict[int, int] = {}
        self._monitor_buffers: list[ctypes.Array[ctypes.c_ubyte]] = []  # kept while mapped
        self._devices: list[MmioRange] = []  # device registers (map_device)
        self._readonly_monitor: list[tuple[int, int]] = []  # (first, last) address
        self._running = False  # inside emu_start (not a register write of the monitor's)
        self._templates: dict[int, UcContext] = {}
        self.watchdog_limit = LIMIT  # seconds a run without an instruction count may take
        self._hookless_blocks = False  # blocks may have been compiled with no code hook set
        self._stop_mnemonics: frozenset[str] = frozenset()  # stop_before's
        self._exit: Exit | None = None
        self._trace_hook: CodeHook | None = None
        self._window_hook: int | None = None
        self._window_prev: int | None = None
        self._cr2 = 0  # the guest's CR2 as the last run stopped (marker.py)
        self.aliases: dict[int, int] = {}  # monitor address -> the RAM page it shows
        self.code_pages: set[int] = set()  # RAM pages the owner write-protected
        self.dirty_log: DirtyLog | None = None  # while live migration copies the RAM
        self.linear = LinearMemory(self.read, self.write, self.paging_registers)
        """Memory at linear addresses through the CPU's page tables: what the CPU reads and
        writes for itself (interrupt delivery), and instruction bytes for the monitor."""
        self._install_hooks()

    # ------------------------------------------------------------------ memory
    def read(self, address: int, size: int) -> bytes:
        """Read guest-physical memory the way the CPU would see it (open bus outside RAM),
        without side effects: open bus is not asked (that would report an access)."""
        if address >= 0 and address + size <= self.ram_size:
            return self._ram_view[address : address + size].tobytes()
        first, last = address & ~(PAGE - 1), (address + size - 1) & ~(PAGE - 1)
        if all(page in self.monitor_pages for page in range(first, last + 1, PAGE)):
            return bytes(self.uc.mem_read(address, size))
        return bytes(self._read_byte(a & 0xFFFFFFFF) for a in range(address, address + size))

    def linear_fixed(self) -> LinearMemory:
        """`linear`, with the paging registers read once: for the many accesses of one
        delivery or fault, between which they cannot change."""
        registers = self.paging_registers()
        return LinearMemory(self.read, self.write, lambda: registers)

    def code(self, address: int, size: int) -> bytes:
        """Instruction bytes at linear `address`, as the CPU would fetch them now (no side
        effect; fewer bytes where a page is not mapped)."""
        return self._code(address, size, self._cr0.read())

    @property
    def ram_address(self) -> int:
        """Where the guest's RAM is in this process (host RAM never moves)."""
        return self._ram_pointer

    @property
    def ram_view(self) -> memoryview:
        """The guest's RAM as bytes, read in place (a tracer compares code at every
        instruction); guest-physical address = index."""
        return self._ram_view

    def traced_code(self, address: int, size: int, registers: bytes) -> bytes:
        """`code()` of the instruction about to run at `address` (from the tracer's hook),
        with CR0 from a `trace_registers()` read. With paging on, the bytes in its page are
        fetched by unicorn's own MMU (the CPU has just walked the tables to that page: the
        walk changes no accessed bit), in one C call instead of a page walk in Python."""
        cr0 = int.from_bytes(registers[-4:], sys.byteorder)
        if cr0 & CR0_PG and size <= PAGE - (address & (PAGE - 1)):
            status = _vmem_read(
                self._handle, ctypes.c_uint64(address), _FETCH, self._fetched, ctypes.c_size_t(size)
            )
            if not status:
                return self._fetched.raw[:size]
        return self._code(address, size, cr0)

    def _code(self, address: int, size: int, cr0: int) -> bytes:
        if cr0 & CR0_PG:
            return self.linear.peek(address, size)
        if 0 <= address <= self.ram_size - size:
            return self._ram_view[address : address + size].tobytes()
        return self.read(address, size)

    def paging_registers(self) -> PagingRegisters:
        return PagingRegisters(*self._paging.read())

    def paging_on(self) -> bool:
        """Is the CPU's CR0.PG set now (one register read: a recorder asks at every store)?"""
        return bool(self._cr0.read() & CR0_PG)

    def _read_byte(self, address: int) -> int:
        if address < self.ram_size or (address & ~(PAGE - 1)) in self.monitor_pages:
            return self.uc.mem_read(address, 1)[0]
        return 0xFF

    def write(self, address: int, data: bytes) -> bool:
        """Write guest RAM on the guest's behalf; False (nothing written) outside RAM."""
        if address < 0 or address + len(data) > self.ram_size:
            return False
        ctypes.memmove(self.host.pointer(self.ram) + address, data, len(data))
        if self.dirty_log is not None:
            self.dirty_log.written(address, len(data))
        # Unicorn keeps stale compiled blocks after a write from outside once the count hook
        # has been used (measured on 2.1.4): drop them for the written range. (The block
        # clock checks its counts against RAM itself.)
        self.drop_blocks(address, address + len(data))
        self._after_lookup()
        return True

    def drop_blocks(self, begin: int, end: int) -> None:
        """`ctl_remove_cache(begin, end)` in one foreign call (the binding's takes ~3 µs of
        Python, and a trap's frame push writes RAM this way)."""
        status = self._remove_cache(_REMOVE_CACHE, ctypes.c_uint64(begin), ctypes.c_uint64(end))
        if status:
            raise UcError(status)

    def release(self) -> None:
        """Give the RAM slice back to the host: unmapped from this CPU first, so nothing
        here can reach it once another machine is given the same host memory."""
        self.uc.mem_unmap(0, self.ram_size)
        self.host.free(self.ram)
        self.ram_size = 0

    def map_monitor(
        self,
        offset: int,
        size: int,
        executable: bool = False,
        writable: bool = False,
        read_by_code: bool = False,
    ) -> int:
        """Map monitor memory at MONITOR_BASE + offset, read-only to the guest unless
        `writable` (the vCPU area that translated code updates). `read_by_code`: translated
        code reads it, so reads of it are not watched. Returns its address."""
        assert not self._sealed, "monitor memory is mapped before the guest first runs"
        address = MONITOR_BASE + offset
        perms = UC_PROT_READ | (UC_PROT_EXEC if executable else 0)
        pages = range(address, address + size, PAGE)
        self.monitor_pages.update(pages)
        if writable or read_by_code:  # (translated code's: RAM aliases may split it)
            self.uc.mem_map(address, size, perms | (UC_PROT_WRITE if writable else 0))
        else:  # the monitor's own tables: host memory that write_monitor writes directly
            buffer = (ctypes.c_ubyte * size)()  # zeroed, as unicorn's own mapping is
            host = ctypes.addressof(buffer)
            self._monitor_buffers.append(buffer)
            self.uc.mem_map_ptr(address, size, perms, host)
            self.uc.mem_protect(address, size, perms)  # (or the guest's stores are not dropped)
            self._monitor_host.update({page: host + page - address for page in pages})
        if not writable and not read_by_code:
            self._readonly_monitor.append((address, address + size - 1))
        return address

    def watch_monitor_reads(self) -> None:
        """Report every data read of the monitor's read-only pages to the owner, as
        "monitor_read" (the CPU's own descriptor reads from the shadow GDT included: the
        owner tells them apart). Writable monitor pages are left out: translated code reads
        them all the time. A memory hook bounded to those ranges: a host turns it on for its
        VMs (unicorn runs every load slower with a read hook, fact 6)."""
        ranges: list[list[int]] = []
        for first, last in sorted(self._readonly_monitor):
            if ranges and ranges[-1][1] + 1 == first:
                ranges[-1][1] = last  # one hook per run of pages: each costs every load
            else:
                ranges.append([first, last])
        for first, last in ranges:
            self.uc.hook_add(UC_HOOK_MEM_READ, self._on_monitor_read, None, first, last)

    def map_device(
        self,
        base: int,
        size: int,
        read: Callable[[int, int], int],
        write: Callable[[int, int, int], None],
    ) -> None:
        """A device's registers at guest-physical `base` (the local and I/O APICs): every
        access calls `read(offset, size)` or `write(offset, size, value)`, at the exact EIP
        and count under either clock (mmio.py)."""
        assert not self._sealed, "devices are mapped before the guest first runs"
        self._devices.append(MmioRange(base, base + size - 1, read, write))

    def _on_monitor_read(
        self, uc: Uc, access: int, address: int, size: int, value: int, _: object
    ) -> None:
        if self._running and self.owner:
            self.owner.memory_violation("monitor_read", address, size, 0)

    def alias_ram_page(self, address: int, page: int) -> None:
        """Map guest RAM page `page` a second time, writable, at monitor address `address`
        (replacing whatever that slot showed): translated code can store through it into a
        page whose own mapping is write-protected for code tracing."""
        self.uc.mem_unmap(address, PAGE)
        self.uc.mem_map_ptr(
            address, PAGE, UC_PROT_READ | UC_PROT_WRITE, self.host.pointer(self.ram) + page
        )
        self.aliases[address] = page

    def write_monitor(self, address: int, data: bytes, code: bool = True) -> None:
        """The monitor writes its own memory (allowed even where the guest may not). Unless
        it writes data no instruction is fetched from, blocks compiled from there go.
        Directly into the host memory behind it while the CPU's paging is off; with paging
        on through unicorn, whose write also empties the TLB (a shadow page table may have
        changed)."""
        if not data:  # e.g. the shadow of a GDT whose limit holds no full descriptor
            return
        host = self._monitor_host_address(address, len(data))
        if host is not None and not self.paging_on():
            ctypes.memmove(host, data, len(data))
        else:
            self.uc.mem_write(address, data)
        if code:
            self.drop_blocks(address, address + len(data))

    def _monitor_host_address(self, address: int, size: int) -> int | None:
        """The host address behind monitor memory [address, address + size), if one buffer
        holds all of it."""
        first = address & ~(PAGE - 1)
        host = self._monitor_host.get(first)
        if host is None:
            return None
        for page in range(first + PAGE, address + size, PAGE):
            if self._monitor_host.get(page) != host + page - first:
                return None
        return host + address - first

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, ram: bool = True) -> MachineSnapshot:
        """Everything running changes in this machine, taken between two runs: the CPU's
        whole context (CPL, descriptor caches, the exception marker of fact 3 included),
        guest RAM (not `ram`: empty, for a caller that reads it in place), the monitor's
        memory, which RAM pages are write-protected and aliased."""
        uc = self.uc
        return MachineSnapshot(
            cpu=uc.context_save(),
            ram=ctypes.string_at(self.ram_address, self.ram_size) if ram else b"",
            monitor=tuple(
                (begin, bytes(uc.mem_read(begin, end - begin)))
                for begin, end in self._monitor_ranges()
            ),
            protected=frozenset(self._protected_pages()),
            aliases=tuple(self.aliases.items()),
            window=self.clock.window() or (self._window_hook is not None, self._window_prev),
        )

    def restore(self, snapshot: MachineSnapshot) -> None:
        """Put this machine in the state `snapshot` describes (taken from this machine or
        from another one built the same way: same RAM size, same monitor mappings). An empty
        `snapshot.ram`: the caller has put the RAM in place already."""
        uc = self.uc
        aliases = dict(snapshot.aliases)
        for address in [a for a in self.aliases if a not in aliases]:
            uc.mem_unmap(address, PAGE)  # an alias slot not in use yet: plain monitor memory
            uc.mem_map(address, PAGE, UC_PROT_READ | UC_PROT_WRITE)
            del self.aliases[address]
        for address, page in aliases.items():
            if self.aliases.get(address) != page:
                self.alias_ram_page(address, page)
        if snapshot.ram:
            ctypes.memmove(self.ram_address, snapshot.ram, self.ram_size)
        for begin, data in snapshot.monitor:
            uc.mem_write(begin, data)
        protected = frozenset(self._protected_pages())
        for page in protected - snapshot.protected:
            self.protect_code_page(page, False)
        for page in snapshot.protected - protected:
            self.protect_code_page(page, True)
        on, previous = snapshot.window
        if not self.clock.watch_window(on, after_sti=previous is not None):
            self.watch_interrupt_window(on)
            self._window_prev = previous
        self._exit = None
        uc.context_restore(snapshot.cpu)
        # Memory changed behind unicorn's back (fact 12): no compiled block may survive, and
        # no translation either (the page tables may differ): a CR3 load empties the TLB,
        # which restoring a context does not.
        uc.ctl_flush_tb()
        self.clock.forget()
        uc.reg_write(x.UC_X86_REG_CR3, uc.reg_read(x.UC_X86_REG_CR3))

    def _monitor_ranges(self) -> list[tuple[int, int]]:
        """The monitor's own memory as [begin, end) ranges, RAM aliases left out."""
        ranges: list[tuple[int, int]] = []
        for page in sorted(self.monitor_pages.difference(self.aliases)):
            if ranges and ranges[-1][1] == page:
                ranges[-1] = (ranges[-1][0], page + PAGE)
            else:
                ranges.append((page, page + PAGE))
        return ranges

    def _protected_pages(self) -> list[int]:
        return [
            page
            for begin, end, perms in self.uc.mem_regions()
            if begin < self.ram_size and not perms & UC_PROT_WRITE
            for page in range(begin, min(end + 1, self.ram_size), PAGE)
        ]

    # ------------------------------------------------------------------ entry
    def build_templates(
        self,
        gdt: tuple[int, int],
        boot_cs: int,
        boot_ss: int,
        outer: dict[int, tuple[int, int]] | None = None,
        scratch: int | None = None,
        cr0: int = CR0_PE | CR0_ET,
    ) -> None:
        """Save a clean CPU context for CPL 0 and, via one real IRETD each, for outer rings.

        `outer` maps a CPL to the (cs, ss) selectors to enter it with; `scratch` is a page of
        monitor memory (mapped executable) used for the IRETD and its stack frame.
        """
        uc = self.uc
        uc.reg_write(x.UC_X86_REG_GDTR, (0, gdt[0], gdt[1], 0))
        uc.reg_write(x.UC_X86_REG_CR0, cr0)
        # unicorn's CPU starts with CR4 = OSFXSR | FSGSBASE | OSXSAVE (0x50200, measured), and
        # every world switch restores the template's: a monitor sets the guest's bits itself
        uc.reg_write(x.UC_X86_REG_CR4, 0)
        uc.reg_write(x.UC_X86_REG_CS, boot_cs)
        for reg in (
            x.UC_X86_REG_SS,
            x.UC_X86_REG_DS,
            x.UC_X86_REG_ES,
            x.UC_X86_REG_FS,
            x.UC_X86_REG_GS,
        ):
            uc.reg_write(reg, boot_ss)
        uc.reg_write(x.UC_X86_REG_EFLAGS, 0x2)
        ring0 = uc.context_save()
        self._template(0, ring0)
        for cpl, (cs, ss) in (outer or {}).items():
            assert scratch is not None, "outer rings need a scratch page"
            uc.context_restore(ring0)
            frame = b"".join(
                v.to_bytes(4, "little") for v in (scratch, cs, 0x2, scratch + PAGE - 64, ss)
            )
            self.write_monitor(scratch + 0x100, frame)
            self.write_monitor(scratch, b"\xcf")  # iretd
            uc.reg_write(x.UC_X86_REG_ESP, scratch + 0x100)
            self.clock.run(scratch, _UNTIL, 1)
            if uc.reg_read(x.UC_X86_REG_CS) & 3 != cpl:
                raise RuntimeError(f"could not enter CPL {cpl} with cs={cs:#x}")
            self._template(cpl, uc.context_save())
        uc.context_restore(ring0)

    def _template(self, cpl: int, context: UcContext) -> None:
        self._templates[cpl] = context
        handle = self.uc._uch  # noqa: SLF001
        self._restore[cpl] = partial(uclib.uc_context_restore, handle, context.context)

    def enter(self, state: CpuState, cpl: int, system: SystemState | None = None) -> None:
        """World switch into `state` at `cpl`, with a clean exception state."""
        uc = self.uc
        self._fpu.into(self._templates[cpl])
        status = self._restore[cpl]()  # uc.context_restore(self._templates[cpl])
        if status:
            raise UcError(status)
        if system is not None:
            self._write_system(system)
        try:  # every register in one call (a trap's world switch); refused: one by one
            self._entry_batch.write(_ENTRY_VALUES(state))
            return
        except RegisterRefused:
            uc.context_restore(self._templates[cpl])
            if system is not None:
                self._write_system(system)
        try:
            self._entry[x.UC_X86_REG_CS].write(state.cs)
            self._entry[x.UC_X86_REG_SS].write(state.ss)
        except RegisterRefused as err:
            uc.context_restore(self._templates[cpl])
            raise EntryError(f"cs={state.cs:#06x} ss={state.ss:#06x} refused at CPL {cpl}") from err
        self._write_rest(state)

    def _write_rest(self, state: CpuState) -> None:
        """Data segments and plain registers, once CS and SS are in place."""
        for name, reg in _DATA_SEGMENTS:
            segment = self._entry[reg]
            try:
                segment.write(getattr(state, name))
            except RegisterRefused:  # like IRET to an outer ring: an unusable selector is null
                segment.write(0)
        self._plain.write([getattr(state, name) for name, _ in _PLAIN_REGS])

    def enter_outer(self, state: CpuState, cpl: int, system: SystemState, scratch: int) -> None:
        """Enter an outer ring with no template of it (bare metal resuming a guest at CPL 3):
        as the CPU would, by one IRETD from ring 0 through the guest's own GDT, run from the
        RAM page at `scratch`, borrowed for that instruction and put back."""
        uc = self.uc
        self._fpu.into(self._templates[0])
        uc.context_restore(self._templates[0])
        self._write_system(system)
        saved = self.read(scratch, PAGE)
        frame = (state.eip, state.cs, state.eflags, state.esp, state.ss)
        self.write(scratch, b"\xcf" + bytes(15) + b"".join(v.to_bytes(4, "little") for v in frame))
        uc.reg_write(x.UC_X86_REG_ESP, scratch + 16)
        try:
            uc.emu_start(scratch, _UNTIL, count=1)
        except UcError as err:
            raise EntryError(f"IRETD to cs={state.cs:#06x} ss={state.ss:#06x}: {err}") from err
        finally:
            self.write(scratch, saved)
        if self.cpl != cpl or self._exit is not None:
            self._exit = None
            raise EntryError(f"cs={state.cs:#06x} ss={state.ss:#06x} refused at CPL {cpl}")
        self._write_rest(state)

    def _write_system(self, system: SystemState) -> None:
        uc = self.uc
        uc.reg_write(x.UC_X86_REG_GDTR, (0, system.gdtr[0], system.gdtr[1], 0))
        uc.reg_write(x.UC_X86_REG_IDTR, (0, system.idtr[0], system.idtr[1], 0))
        uc.reg_write(x.UC_X86_REG_CR4, system.cr4)
        uc.reg_write(x.UC_X86_REG_CR3, system.cr3)
        uc.reg_write(x.UC_X86_REG_CR0, system.cr0)
        uc.reg_write(x.UC_X86_REG_LDTR, system.ldtr)
        uc.reg_write(x.UC_X86_REG_TR, system.tr)
        uc.reg_write(x.UC_X86_REG_CR2, system.cr2)

    def load_cr0(self, value: int) -> None:
        """CR0 alone (a monitor's, with the guest's FPU bits: no paging bit changes, so the
        TLB stays)."""
        self._cr0.write(value)

    def load_paging(self, registers: PagingRegisters) -> None:
        """Turn the CPU's paging on with these registers (a monitor's shadow page tables);
        loading them empties the TLB."""
        uc = self.uc
        uc.reg_write(x.UC_X86_REG_CR4, registers.cr4)
        uc.reg_write(x.UC_X86_REG_CR3, registers.cr3)
        uc.reg_write(x.UC_X86_REG_CR0, registers.cr0)

    def state(self) -> CpuState:
        return CpuState(*self.registers.read())

    def system_state(self) -> SystemState:
        uc = self.uc
        gdtr = uc.reg_read(x.UC_X86_REG_GDTR)
        idtr = uc.reg_read(x.UC_X86_REG_IDTR)
        return SystemState(
            cr0=uc.reg_read(x.UC_X86_REG_CR0),
            cr3=uc.reg_read(x.UC_X86_REG_CR3),
            cr4=uc.reg_read(x.UC_X86_REG_CR4),
            gdtr=(gdtr[1], gdtr[2]),
            idtr=(idtr[1], idtr[2]),
            ldtr=tuple(uc.reg_read(x.UC_X86_REG_LDTR)),
            tr=tuple(uc.reg_read(x.UC_X86_REG_TR)),
            cr2=uc.reg_read(x.UC_X86_REG_CR2),
        )

    @property
    def cpl(self) -> int:
        return self._cs.read() & 3

    def set_registers(self, **values: int) -> None:
        """Change registers in place (no world switch): GPRs, EIP, EFLAGS."""
        self.uc.reg_write_batch([(_REG_BY_NAME[n], v) for n, v in values.items()])

    # ------------------------------------------------------------------ running
    def run(self, eip: int, count: int) -> Exit:
        """Run from `eip` for at most `count` instructions; with count 0, until something
        stops the CPU (translated code, which keeps its own clock), under the watchdog."""
        if not self._sealed:
            self._seal()
        self._exit = None
        if CANCEL.requested:  # Ctrl-C came between two slices: this one does not start
            return Exit(ExitKind.STOP, 0)
        self._cancelled = False
        CANCEL.running(id(self), self._cancel)
        if not count:  # nothing counts this run down: it must not hold the CPU forever
            WATCHDOG.arm(id(self), self._overdue, self.watchdog_limit)
        if self._trace_hook is None:  # blocks compiled now call no tracer added later, with
            self._hookless_blocks = True  # or without a count: a traced run recompiles them
        self._running = True
        cr0, self._cr2 = self._cr0_cr2.read()  # (one foreign call: every trap starts a run)
        assert self._mmio is not None, "sealed"
        self._mmio.before_run(paging=bool(cr0 & CR0_PG), traced=self._trace_hook is not None)
        try:
            error = self.clock.run(eip, _UNTIL, count)
        finally:
            CANCEL.done(id(self))
            if not count:
                WATCHDOG.disarm(id(self))
            self._running = False
            self._clear_paging_leftovers()
        if self._exit is not None:  # a hook stopped the CPU and said why
            return self._exit
        if self.clock.exhausted:
            return Exit(ExitKind.COUNT, count)
        if self.clock.window_opened:
            return Exit(ExitKind.STOP, self.clock.settled(faulted=False))
        fetch = error is not None and error.errno in (UC_ERR_FETCH_UNMAPPED, UC_ERR_FETCH_PROT)
        # a fetch fault: no instruction began at EIP (the jump there retired)
        retired = self.clock.settled(faulted=error is not None and not fetch)
        if self._cancelled and error is None:  # stopped between two blocks: all retired
            return Exit(ExitKind.STOP, retired)
        if error is not None:
            if fetch:
                return Exit(ExitKind.FETCH_FAULT, retired, address=self.read_eip())
            return Exit(ExitKind.ERROR, retired, detail=str(error))
        eip_now = self.read_eip()
        if eip_now == _UNTIL:
            return Exit(ExitKind.FETCH_FAULT, retired, address=eip_now)
        return Exit(ExitKind.HALT, retired)

    def _stop(
        self,
        kind: ExitKind,
        *,
        retired_now: bool,
        eip_past: bool = False,
        vector: int | None = None,
        is_trap: bool = False,
        address: int | None = None,
        begun: bool = True,
    ) -> None:
        """Record why the CPU stops, counting instructions now: after `emu_stop` unicorn may
        already have counted the next instruction, which never runs. `retired_now`: the
        instruction now running completes; `eip_past`: EIP is already after it (INT n);
        `begun`: False when fetching the instruction at EIP faulted (it never began)."""
        retired = self.clock.stop_count(retired_now, eip_past, begun)
        self._exit = Exit(kind, retired, vector, is_trap, address)
        self._cr2 = self._cr2_reg.read()  # a #PF has just set it
        self.clock.stop()

    def _clear_paging_leftovers(self) -> None:
        """After the CPU stopped with paging on: CR2 and the exception marker as the guest
        left them, not as unicorn's clean-up did (marker.py)."""
        if self.paging_on():
            clear_after_run(self.uc, self._cr2)

    def _after_lookup(self) -> None:
        """Unicorn looks a physical address up as a linear one when it drops compiled blocks
        or changes a page's protection; with paging on, where the tables in force do not
        map it, that lookup faults inside unicorn as its clean-up does (marker.py). Between
        two runs (a monitor at work) that is undone at once, or the next real fault of the
        guest would arrive as #DF."""
        if not self._running:
            self._clear_paging_leftovers()

    def _overdue(self) -> None:
        """The watchdog's call (from its thread): the run has taken far too long."""
        self._exit = Exit(
            ExitKind.ERROR,
            0,
            detail=f"the CPU did not come back to the monitor within {self.watchdog_limit:g} s",
        )
        self.clock.stop()

    def _cancel(self) -> None:
        """CANCEL's call (from another thread): stop the CPU where it is."""
        self._cancelled = True
        self.clock.stop()

    def request_stop(self) -> None:
        """Stop after the current instruction (called from a port handler)."""
        if self._exit is None:
            self._stop(ExitKind.STOP, retired_now=True)

    def stop_before_this(self) -> None:
        """Stop before the instruction now running completes (from a memory hook: it runs
        again from its start when the CPU resumes, unless the owner steps over it)."""
        if self._exit is None:
            self._stop(ExitKind.STOP, retired_now=False)

    def add_door(self, address: int) -> None:
        """A callout door: translated code jumps to `address` to hand control to the monitor.
        A code hook bounded to that one address costs nothing anywhere else (fact 11)."""
        self.uc.hook_add(UC_HOOK_CODE, self._on_door, None, address, address)

    def _on_door(self, uc: Uc, address: int, size: int, _: object) -> None:
        self._stop(ExitKind.DOOR, retired_now=False, address=address)

    def stop_before(self, mnemonics: frozenset[str]) -> bool:
        """Stop with a DOOR exit before every instruction with one of these mnemonics, at any
        address: bare metal's RDMSR and WRMSR, which unicorn can neither hook nor make fault
        (fact 16). The block clock finds them as it decodes new blocks and puts a code hook
        on each (fact 11: free elsewhere); False if this clock cannot (VMLAB_CLOCK=count)."""
        self._stop_mnemonics = mnemonics
        return self.clock.stop_before(mnemonics, self._add_stop_before)

    def _add_stop_before(self, address: int) -> None:
        self.uc.hook_add(UC_HOOK_CODE, self._on_stop_before, None, address, address)

    def _on_stop_before(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self.clock.at_deadline():
            return  # the step hook stops here first: the instruction does not run now
        insn = decode(self.code(address, MAX_INSN_SIZE), address)
        if insn is not None and insn.mnemonic in self._stop_mnemonics:  # else new code there
            self._stop(ExitKind.DOOR, retired_now=False, address=address)

    def protect_code_page(self, page: int, protected: bool) -> None:
        """Write-protect a page of guest RAM that holds translated code (fact 7): a guest
        store into it then reaches the owner's `code_page_written`."""
        if protected:
            self.code_pages.add(page)
        else:
            self.code_pages.discard(page)
        logged = self.dirty_log is not None and page in self.dirty_log.watched
        writable = not protected and not logged
        self.uc.mem_protect(page, PAGE, UC_PROT_ALL if writable else UC_PROT_READ | UC_PROT_EXEC)
        self._after_lookup()

    def start_dirty_log(self) -> None:
        """Log which RAM pages are written from now on (dirtylog.py)."""
        self.dirty_log = DirtyLog(self.uc, self.ram_size, self.code_pages)

    def take_dirty(self) -> list[int]:
        """RAM pages written since the log started or was last taken; an aliased page (bt
        stores into it through a second mapping no fault sees) always counts as written."""
        assert self.dirty_log is not None, "the dirty log is on"
        return self.dirty_log.take(self.aliases.values())

    def stop_dirty_log(self) -> None:
        if self.dirty_log is not None:
            self.dirty_log.stop()
            self.dirty_log = None

    def watch_interrupt_window(self, on: bool) -> None:
        """Stop as soon as the guest sets EFLAGS.IF (STI, POPF, IRET…), before the next
        instruction — or one instruction later after STI, whose shadow delays interrupts.

        Bare metal needs this while an interrupt is pending and masked: unicorn has no
        interrupt line, so nothing else would notice the window opening. A Python hook per
        instruction, but only inside such windows (typically a short critical section).
        """
        if self.clock.watch_window(on):  # the block clock looks at each block's start
            return
        if on and self._window_hook is None:
            self._window_prev = None
            self._window_hook = self.uc.hook_add(UC_HOOK_CODE, self._on_window)
            self._recompile_for_code_hook()
        elif not on and self._window_hook is not None:
            self.uc.hook_del(self._window_hook)
            self._window_hook = None

    def _on_window(self, uc: Uc, address: int, size: int, _: object) -> None:
        if self.clock.at_deadline():
            return
        previous, self._window_prev = self._window_prev, address
        if not uc.reg_read(x.UC_X86_REG_EFLAGS) & EFLAGS_IF or self._exit is not None:
            return
        if previous is not None and self.code(previous, 1) == b"\xfb":  # STI shadow
            return
        self._stop(ExitKind.STOP, retired_now=False)

    def set_tracer(
        self, callback: Callable[[int, int], None] | None, *, checks_deadline: bool = False
    ) -> None:
        """Call `callback(eip, size)` before every instruction (slow: traced runs only),
        with no Python layer of unicorn's in between (`codehook.py`). Under the block clock
        no instruction at a deadline inside a block may be seen (it never runs): a callback
        that `checks_deadline` itself (`clock.stepping and clock.at_deadline()`) is called
        as it is, any other through a function that does (a frame more per instruction)."""
        if self._trace_hook is not None:
            self._trace_hook.remove()
            self._trace_hook = None
        if callback is not None:
            # the count clock's own hook runs first: no other hook sees its deadline (and a
            # layer less is a tenth of a traced instruction's cost)
            hook = callback
            clock = self.clock
            if isinstance(clock, BlockClock) and not checks_deadline:

                def traced(address: int, size: int) -> None:
                    if not (clock.stepping and clock.at_deadline()):
                        callback(address, size)

                hook = traced
            self._trace_hook = CodeHook(self.uc, hook)
            self._recompile_for_code_hook()

    def _recompile_for_code_hook(self) -> None:
        """Blocks compiled when no code hook was set never call one: compile them again."""
        if self._hookless_blocks:
            self.uc.ctl_flush_tb()
            self._hookless_blocks = False

    # ------------------------------------------------------------------ hooks
    def _install_hooks(self) -> None:
        uc = self.uc
        self._interrupt_hook = InterruptHook(uc, self._on_interrupt)  # (on every trap)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_INSN, self._on_in, None, 1, 0, x.UC_X86_INS_IN)
        uc.hook_add(UC_HOOK_INSN, self._on_out, None, 1, 0, x.UC_X86_INS_OUT)
        cpumodel.install(uc, lambda: self.owner.time_stamp() if self.owner else 0)
        uc.hook_add(UC_HOOK_MEM_WRITE_PROT, self._on_write_protected)
        uc.hook_add(UC_HOOK_MEM_FETCH_UNMAPPED | UC_HOOK_MEM_FETCH_PROT, self._on_bad_fetch)

    def _on_interrupt(self, vector: int) -> None:
        eip = self.read_eip()
        trap = self._is_software_interrupt(vector, eip)
        # a #PF fetching the instruction at EIP: the jump or CALL there retired, nothing
        # began at EIP (unicorn's count hook for it never ran)
        begun = vector != VEC_PF or not self._fetch_faulted(eip)
        self._stop(
            ExitKind.EXCEPTION,
            retired_now=trap,
            eip_past=trap,
            vector=vector,
            is_trap=trap,
            begun=begun,
        )

    def _fetch_faulted(self, eip: int) -> bool:
        """Did this #PF (CR2 just set) come from fetching the instruction at EIP? Its bytes
        stop at the page not mapped, or CR2 falls inside them (a page fetched with rights
        it lacks)."""
        insn = decode(self.code(eip, MAX_INSN_SIZE), eip)
        return fetch_faulted(insn, eip, self._cr2_reg.read())

    def _is_software_interrupt(self, vector: int, eip: int) -> bool:
        """Unicorn reports INT n and faults alike; INT n leaves EIP after the instruction."""
        if vector in INTERRUPT_TRAPS:
            return self.code(eip - 1, 1) in (b"\xcc", b"\xce") or self.code(eip - 2, 2) == bytes(
                (0xCD, vector)
            )
        return eip >= 2 and self.code(eip - 2, 2) == bytes((0xCD, vector))

    def _on_invalid(self, uc: Uc, _: object) -> bool:
        self._stop(ExitKind.EXCEPTION, retired_now=False, vector=6)
        return False

    def _on_in(self, uc: Uc, port: int, size: int, _: object) -> int:
        return self.owner.port_in(port, size) if self.owner else 0xFFFFFFFF

    def _on_out(self, uc: Uc, port: int, size: int, value: int, _: object) -> None:
        if self.owner:
            self.owner.port_out(port, size, value)

    def _seal(self) -> None:
        """Make every address that is neither RAM, monitor memory nor a device open bus,
        and put the devices' registers in place (mmio.py).

        Each access to a hole reaches Python and is reported (and a guest sweeping the
        address space costs no mappings). Instruction fetch from a hole is impossible for
        unicorn: the VM crashes, as the guest contract says.
        """
        taken = [(begin, end) for begin, end, _ in self.uc.mem_regions()]
        taken += [(device.first, device.last) for device in self._devices]
        holes: list[MmioRange] = []
        cursor = 0
        for begin, end in [*sorted(taken), (1 << 32, 1 << 32)]:
            if begin > cursor:
                read, write = (
                    partial(self._open_bus_read, cursor),
                    partial(self._open_bus_write, cursor),
                )
                holes.append(MmioRange(cursor, begin - 1, read, write))
            cursor = max(cursor, end + 1)
        block = isinstance(self.clock, BlockClock)
        self._mmio = MmioSpace(self.uc, [*holes, *self._devices], adaptive=block)
        if isinstance(self.clock, BlockClock):
            self.clock.memory = self._mmio
        self._sealed = True

    def _open_bus_read(self, base: int, offset: int, size: int) -> int:
        if self.owner:
            self.owner.memory_violation("open_bus_read", base + offset, size, 0)
        return (1 << (8 * size)) - 1

    def _open_bus_write(self, base: int, offset: int, size: int, value: int) -> None:
        if self.owner:
            self.owner.memory_violation("open_bus_write", base + offset, size, value)

    def _on_write_protected(
        self, uc: Uc, access: int, address: int, size: int, value: int, _: object
    ) -> bool:
        log = self.dirty_log
        restartable = not self._store_of_a_helper(uc)
        if log is not None and address < self.ram_size:
            pages = {address & ~(PAGE - 1), (address + size - 1) & ~(PAGE - 1)}
            logged = [log.store_hit(page) for page in sorted(pages)]
            if any(logged) and not pages & self.code_pages:
                if not restartable:
                    return self._store_now(address, size, value)
                self._stop(ExitKind.STOP, retired_now=False, address=address)
                return False  # the store runs again on the writable page
        if address < self.ram_size and self.owner:
            if not restartable:  # the owner keeps its fragments true; the CPU goes on
                self.owner.code_page_written(address, size, stored=True)
                return self._store_now(address, size, value)
            # A traced code page: the owner unprotects it; the store is retried from scratch.
            self.owner.code_page_written(address, size)
            self._stop(ExitKind.STOP, retired_now=False, address=address)
            return False
        if self.owner:
            self.owner.memory_violation("monitor_write", address, size, value)
        return True  # the write is dropped

    def _store_of_a_helper(self, uc: Uc) -> bool:
        """Is the faulting store one of a helper's (CMPXCHG8B, FXSAVE...)? Unicorn stops an
        inline store exactly (fact 7), but a store made by one of its helpers it only drops:
        the helper finishes (flags, EDX:EAX, FXSAVE's other 500 bytes) and the CPU runs on to
        the end of the block before it stops, so a restart cannot repeat the store. Its
        hook sees the exact EIP (helpers bring it up to date)."""
        eip = uc.reg_read(x.UC_X86_REG_EIP)
        insn = decode(self.code(eip, MAX_INSN_SIZE), eip)
        if insn is None:
            return False
        if insn.mnemonic == "fstp":  # only the 80-bit form is a helper's
            return insn.operands[0].size == _EXTENDED_REAL
        return insn.mnemonic in _HELPER_STORES

    def _store_now(self, address: int, size: int, value: int) -> bool:
        """Make a store the CPU cannot restart, in its hook (past the page's protection,
        and leaving unicorn's compiled blocks alone: one of them is running), and let the
        CPU go on."""
        data = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")
        ctypes.memmove(self.host.pointer(self.ram) + address, data, size)
        if self.dirty_log is not None:
            self.dirty_log.written(address, size)
        return True  # handled: unicorn drops its own copy of the store

    def _on_bad_fetch(
        self, uc: Uc, access: int, address: int, size: int, value: int, _: object
    ) -> bool:
        # nothing began at the address (the jump there retired): EIP is past what ran
        self._stop(ExitKind.FETCH_FAULT, retired_now=True, eip_past=True, address=address)
        return False


# Instructions whose stores unicorn makes in a helper, not in the translated block (measured
# on 2.1.4: a write-protected page's hook returning False leaves the EIP past them).
_HELPER_STORES = frozenset(
    {"cmpxchg8b", "fxsave", "fnsave", "fnstenv", "fbstp", "maskmovq", "maskmovdqu"}
)
_EXTENDED_REAL = 10  # FSTP m80's operand size

_PLAIN_REGS = tuple(
    (name, reg)
    for name, reg in zip(STATE_FIELDS, STATE_REG_IDS, strict=True)
    if name not in ("cs", "ss", "ds", "es", "fs", "gs")
)
_DATA_SEGMENTS = (
    ("ds", x.UC_X86_REG_DS),
    ("es", x.UC_X86_REG_ES),
    ("fs", x.UC_X86_REG_FS),
    ("gs", x.UC_X86_REG_GS),
)
_ENTRY_SEGMENTS = (("cs", x.UC_X86_REG_CS), ("ss", x.UC_X86_REG_SS), *_DATA_SEGMENTS)
_ENTRY_REGS = (*_ENTRY_SEGMENTS, *_PLAIN_REGS)  # CS and SS first, as an entry loads them
_ENTRY_VALUES = attrgetter(*(name for name, _ in _ENTRY_REGS))
_PAGING_REGS = (x.UC_X86_REG_CR0, x.UC_X86_REG_CR3, x.UC_X86_REG_CR4)
_REMOVE_CACHE = (UC_CTL_IO_WRITE << 30) | (2 << 26) | UC_CTL_TB_REMOVE_CACHE  # uc_ctl's code
_REG_BY_NAME = dict(zip(STATE_FIELDS, STATE_REG_IDS, strict=True))
