"""Binary translation (VMware's method): guest user code runs directly at CPL 3, guest kernel
code runs only as translated code from the translation cache, at CPL 1.

The monitor is the trap-and-emulate monitor (shadow GDT, virtual CPU, virtual IDT delivery,
the same emulators for privileged instructions), with one change of strategy for the
kernel: instead of letting sensitive instructions trap — or worse, not trap — it translates
every kernel block before it runs, so the CPU never executes a guest kernel instruction the
monitor has not looked at. Callouts replace traps; a warm cache replaces callouts with
chained jumps.

The executor is the execution loop: entering the translation cache, leaving it (exit stubs,
callouts, the door), parking the guest at an instruction boundary, chaining. Two parts keep
their own state beside it: the clock of translated code (`clock.py`) and the maintenance of
translated code against the guest's stores (`selfmod.py`). (A little longer than this
project's usual module: the vCPU area's exchange and the tracer of translated code stay here,
beside the exits that read them.)
"""

from __future__ import annotations

from collections.abc import Callable

from unicorn import UC_HOOK_CODE, Uc
from unicorn.x86_const import UC_X86_REG_EFLAGS as _EFLAGS
from unicorn.x86_const import UC_X86_REG_EIP as _EIP

from hypervisor.events import (
    Callout,
    FragmentChained,
    FragmentTranslated,
    InsnClass,
    TranslationCacheFlushed,
)
from hypervisor.isa import Instruction, decode
from hypervisor.machine.cancel import CANCEL
from hypervisor.machine.cpu import EFLAGS_IF, CpuState
from hypervisor.machine.hostram import PAGE
from hypervisor.machine.interrupts import VEC_PF
from hypervisor.machine.machine import EntryError, Exit, ExitKind
from hypervisor.machine.paging import PageFault
from hypervisor.vmm.bt.area import MONITOR_FIELDS, TC_FIELDS, VcpuArea
from hypervisor.vmm.bt.cache import Fragment, StubKind, TranslationCache
from hypervisor.vmm.bt.clock import TcClock
from hypervisor.vmm.bt.fetch import KernelFetch, sequence_faulted
from hypervisor.vmm.bt.introspect import CacheIntrospection
from hypervisor.vmm.bt.selfmod import ALIAS_SLOTS, SelfModifyingCode
from hypervisor.vmm.bt.translator import LOOKUP_EXIT, WINDOW_EXIT, Translator
from hypervisor.vmm.contract import ExitInfo, ExitReason, Mode
from hypervisor.vmm.emulate import EMULATORS
from hypervisor.vmm.executors import Traced, trap_name
from hypervisor.vmm.guestcpu import GuestCpu, ResumeRefused
from hypervisor.vmm.mmu.faults import page_fault
from hypervisor.vmm.mmu.shadow import WINDOW_PDE
from hypervisor.vmm.trap import TrapAndEmulate

VCPU_AREA_OFFSET = 0x12000
DOOR_OFFSET = 0x14000  # after the two pages of the vCPU area
TC_OFFSET = 0x100000
TC_CAPACITY = 1 << 20
ALIAS_OFFSET = TC_OFFSET + TC_CAPACITY
TC_SLICE = 1_000_000  # the most a slice of translated code may run before it comes back


class BinaryTranslation(TrapAndEmulate):
    mode = Mode.BT
    shadow_paging = True  # on the trap monitor's shadow page tables (docs/paging.md)
    CHECKPOINTED = (
        "cache",
        "translator",
        "selfmod",
        "clock",
        "parked",
        "_area_values",
        "_selectors",
        "_monitor_fields",
        "fetch",
    )
    NOT_CHECKPOINTED = ("area", "door", "_watch")
    counts_each_instruction = False  # translated code keeps its own clock, block by block

    def start(self, entry: CpuState) -> None:
        m = self.machine
        self.area = VcpuArea(m.map_monitor(VCPU_AREA_OFFSET, PAGE, writable=True))
        m.map_monitor(VCPU_AREA_OFFSET + PAGE, PAGE, read_by_code=True)  # the monitor's fields
        self.door = m.map_monitor(DOOR_OFFSET, PAGE, executable=True)
        m.write_monitor(self.door, b"\xf4")  # never executed: the door hook stops first
        m.add_door(self.door)
        self.fetch = KernelFetch(self)
        tc_base = m.map_monitor(TC_OFFSET, TC_CAPACITY, executable=True)
        self.cache = TranslationCache(tc_base, TC_CAPACITY)
        self.translator = self._new_translator()
        # unused slots are read-only; a slot in use maps one of the guest's own RAM pages
        aliases = m.map_monitor(ALIAS_OFFSET, ALIAS_SLOTS * PAGE, read_by_code=True)
        self.selfmod = SelfModifyingCode(self, aliases)
        self.clock = TcClock(self)
        self.parked: int | None = None  # guest EIP while the monitor holds a kernel state
        self._area_values: dict[str, int] = {}  # the vCPU area as last read
        self._selectors = (0x08, 0x10)  # the guest kernel's CS and SS, as it sees them
        self._monitor_fields = b""  # the monitor's page of the vCPU area as last written
        self._watch: tuple[frozenset[int], Callable[[int], None], list[int]] | None = None
        super().start(entry)

    # ------------------------------------------------------------------ vCPU area
    def _write_area(self) -> None:
        """The vCPU area as the monitor knows it, before the CPU enters the cache. The
        monitor's page changes rarely and only the monitor writes it: written on change."""
        v = self.vcpu
        tc = {"vif": EFLAGS_IF if v.interrupts_enabled else 0, "viopl": v.iopl << 12}
        self.machine.write_monitor(
            self.area.base,
            VcpuArea.pack(TC_FIELDS, {**tc, "budget": self.clock.budget}),
            code=False,
        )
        monitor = VcpuArea.pack(
            MONITOR_FIELDS,
            {
                "pending": int(self.vm.irqs.pending_vector() is not None),
                "vcs": self._selectors[0],
                "vss": self._selectors[1],
                "vcr0": v.cr0,
                "vtr": v.tr,
                "vldtr": v.ldtr,
                "gdtr_limit": v.gdtr[1],
                "gdtr_base": v.gdtr[0],
                "idtr_limit": v.idtr[1],
                "idtr_base": v.idtr[0],
            },
        )
        if monitor != self._monitor_fields:
            self.machine.write_monitor(self.area.monitor_page, monitor, code=False)
            self._monitor_fields = monitor

    def _read_area(self) -> dict[str, int]:
        values = VcpuArea.unpack(TC_FIELDS, self.machine.read(self.area.base, 4 * len(TC_FIELDS)))
        self._area_values = values
        self._check_area(values)
        if self.vcpu.cpl == 0:
            self.vcpu.interrupts_enabled = bool(values["vif"] & EFLAGS_IF)
            self.vcpu.iopl = (values["viopl"] >> 12) & 3
        if self.clock.spend(values["budget"]):
            self.vcpu.interrupt_shadow = False  # the instruction after MOV SS has run
        return values

    def _check_area(self, values: dict[str, int]) -> None:
        """The guest kernel can store into the vCPU area's first page (see area.py). What
        translated code stores there is always a virtual IF of 0 or IF, an IOPL, and a
        budget that only goes down; anything else is the guest's doing: an isolation
        event, and the monitor puts back what it knows. (The other fields are rewritten by
        translated code before each use, and a store of a plausible IF or IOPL is the guest
        changing its own virtual flags.)"""
        known = {
            "vif": EFLAGS_IF if self.vcpu.interrupts_enabled else 0,
            "viopl": self.vcpu.iopl << 12,
            "budget": self.clock.budget,
        }
        plausible = {
            "vif": values["vif"] in (0, EFLAGS_IF),
            "viopl": not values["viopl"] & ~0x3000,
            "budget": self.clock.plausible(values["budget"]),
        }
        for name, ok in plausible.items():
            if not ok:
                address = getattr(self.area, name)
                detail = f"the vCPU area's {name} read {values[name]:#x} at the exit: put back"
                self.isolation_event("monitor_write", address, detail)
                values[name] = known[name] & 0xFFFFFFFF
                self.machine.write_monitor(address, values[name].to_bytes(4, "little"), code=False)

    # ------------------------------------------------------------------ entering
    def _new_translator(self) -> Translator:
        m = self.machine
        translator = Translator(self.cache, self.area, self.door, self.fetch.read, m.ram_size)
        m.write_monitor(*translator.shared_code)
        return translator

    def enter(self, virtual: CpuState) -> None:
        if self.vcpu.cpl == 0:
            self._selectors = (virtual.cs & ~3, virtual.ss & ~3)
            try:
                fragment = self.fragment_for(virtual.eip)
            except PageFault as fault:  # its tables do not map the code: a true #PF there,
                super().enter(virtual)  # delivered before the next slice (not recursively:
                self.parked = virtual.eip  # the handler's own fetch may fault too)
                self.fetch.refused(fault)
                return
            if fragment is None:
                return
            virtual = virtual.copy()
            virtual.eip = fragment.tc_start
        self.parked = None
        self._write_area()
        super().enter(virtual)

    def fragment_for(self, guest_eip: int) -> Fragment | None:
        """The fragment for `guest_eip`, translated now if needed (the TC miss path).

        With the guest's paging on, its tables are walked first, as the CPU's fetch would
        (setting the accessed bit): the fragment is the one read from that frame, so a
        remapped page or another address space gets its own. Raises PageFault where the
        guest's tables refuse the fetch."""
        stepping = self.clock.stepping
        paged = self.mmu is not None and self.mmu.active
        frame = self.fetch.frame(guest_eip, paged)
        fragment = self.cache.lookup((guest_eip, frame, paged), stepping)
        if fragment is not None and not self._still_mapped(fragment, paged):
            self.selfmod.drop(fragment, frame)  # its second page is mapped elsewhere now
            fragment = None
        if fragment is not None:
            self.cache.stats.hits += 1
            fragment.hits += 1
            return fragment
        self.cache.stats.misses += 1
        frames = (frame, *self.fetch.next_frame(guest_eip, paged))
        if len(frames) == 1:
            self.fetch.whole_instruction(guest_eip)
        if not 0 <= frame < self.machine.ram_size or (paged and guest_eip >> 22 == WINDOW_PDE):
            self.fetch_outside_ram(guest_eip)
            return None
        checked = self.selfmod.is_self_checked(frame)
        fragment = self.translator.translate(guest_eip, checked, stepping, frames, paged)
        if fragment is None:  # full: flush everything and translate again
            self._flush()
            fragment = self.translator.translate(guest_eip, checked, stepping, frames, paged)
            assert fragment is not None, "one block is larger than the whole cache"
        if len(fragment.frames) > 1 and paged:  # its last instruction is fetched from there
            self.guest_memory.translate((guest_eip | (PAGE - 1)) + 1)
        for address, code in self.translator.pending_code:
            self.machine.write_monitor(address, code)
        self.translator.pending_code.clear()
        self.cache.add(fragment)
        self.selfmod.track(fragment)
        self._watch_fragment(fragment)
        fragment.hits += 1
        self.vm.emit(
            FragmentTranslated(
                self.vm.name,
                self.vm.step,
                fragment.id,
                fragment.guest_start,
                fragment.guest_end,
                fragment.tc_start,
                fragment.tc_end,
                len(fragment.insns),
            )
        )
        return fragment

    def watch_code(self, addresses: frozenset[int], hit: Callable[[int], None]) -> None:
        """Kernel code runs as its translation: a code hook on the TC address of each
        translated instruction at one of `addresses`, in the fragments there are and those
        translated from now on."""
        self._watch = (addresses, hit, [])
        for fragment in list(self.cache.fragments.values()):
            if fragment.valid:
                self._watch_fragment(fragment)

    def unwatch_code(self) -> None:
        if self._watch is not None:
            for hook in self._watch[2]:
                self.machine.uc.hook_del(hook)
        self._watch = None

    def _watch_fragment(self, fragment: Fragment) -> None:
        if self._watch is None:
            return
        addresses, _, hooks = self._watch
        uc = self.machine.uc
        for tc, index in fragment.instruction_starts.items():
            if fragment.insns[index].address in addresses:
                hooks.append(uc.hook_add(UC_HOOK_CODE, self._watched, (fragment, index), tc, tc))
                uc.ctl_remove_cache(tc, tc + 1)  # compiled before the hook: again, with it

    def _watched(self, uc: Uc, address: int, size: int, data: tuple[Fragment, int]) -> None:
        """The step of the watched instruction: the count so far, plus what the TC spent
        of its budget since, less the instructions of this fragment from it on (paid for
        on entry, not run yet)."""
        fragment, index = data
        if self._watch is None or not fragment.valid:
            return
        self._watch[1](self.vm.stats.total + self._unread_before(fragment, index))

    def _unread_before(self, fragment: Fragment, index: int) -> int:
        """Guest instructions the TC ran before the fragment's `index`-th that the VM has
        not counted yet: what it spent of its budget since the monitor last read it, less
        the fragment's instructions from that one on (paid for on entry, not run yet)."""
        raw = int.from_bytes(self.machine.read(self.area.budget, 4), "little")
        spent = self.clock.unread(raw) if self.clock.plausible(raw) else 0  # (guest nonsense)
        return spent - (len(fragment.insns) - index)

    def _still_mapped(self, fragment: Fragment, paged: bool) -> bool:
        """Is a fragment whose last instruction straddles into the next page still read
        from the same frame there? (Its first page's frame is in its key.)"""
        if len(fragment.frames) == 1:
            return True
        return fragment.frames[1:] == self.fetch.next_frame(fragment.guest_start, paged)

    def _flush(self) -> None:
        self.selfmod.untrack_all()
        self.cache.flush()
        self.translator = self._new_translator()
        self.vm.emit(TranslationCacheFlushed(self.vm.name, self.vm.step))

    def retired_are_guest_instructions(self) -> bool:
        return self.vcpu.cpl == 3

    def clock_now(self) -> None:
        """In the TC, the guest instructions it ran are the budget it spent so far, less
        those of the running block from the one touching the device on (each block pays for
        all of its instructions on entry): a PIT or PIC port, an APIC's page. (A traced run
        has counted each one as it finished.)"""
        if self.vcpu.cpl != 0:
            super().clock_now()
            return
        if self._spent():
            self.clock.sync(ahead=0 if self.tracing else self._paid_ahead())

    def _spent(self) -> bool:
        """Count what translated code spent of its budget since the monitor last read it
        (False if the guest has stored nonsense there: the exit's check puts it back)."""
        raw = int.from_bytes(self.machine.read(self.area.budget, 4), "little")
        if not self.clock.plausible(raw):
            return False
        self.clock.spend(raw)
        return True

    def _paid_ahead(self) -> int:
        """Guest instructions of the running fragment from the one accessing memory on:
        paid for, not yet run."""
        fragment = self.cache.fragment_at(self.machine.uc.reg_read(_EIP))
        if fragment is None or self.parked is not None:
            return 0
        noted = self.memory_access_eip()
        for index, insn in enumerate(fragment.insns):
            if insn.address == noted:
                return len(fragment.insns) - index
        return 0

    def uncounted_in_slice(self) -> int | None:
        """From a hook in the TC (a port access, a console line, a device register): the
        guest instructions run up to the one the CPU is in, itself included, that the VM
        has not counted (the TC's clock is read at exits): so that an event is dated by its
        exact step, as on bare metal. (A traced run has counted each as it finished, all
        but the one in flight.)"""
        fragment = self._fragment_running()
        if fragment is None:
            return None
        if self.tracing:
            return int(self._pending is not None)
        eip = self.machine.uc.reg_read(_EIP)
        return self._unread_before(fragment, _index_running(fragment, eip) + 1)

    def _fragment_running(self) -> Fragment | None:
        """The fragment whose translation the CPU is in (None outside the TC, or parked)."""
        if self.vcpu.cpl != 0 or self.parked is not None:
            return None
        return self.cache.fragment_at(self.machine.uc.reg_read(_EIP))

    def translated_instructions(self) -> int:
        return self.cache.stats.translated_insns

    def introspect(self) -> CacheIntrospection:
        return CacheIntrospection(self.cache, self.machine.read)

    # ------------------------------------------------------------------ guest view
    def virtual_state(self) -> CpuState:
        state = super().virtual_state()
        if self.vcpu.cpl == 0 and self.parked is not None:
            state.eip = self.parked
        elif self.vcpu.cpl == 0 and self.cache.contains(state.eip):
            fragment = self.cache.fragment_at(state.eip)
            index = fragment.boundaries.get(state.eip) if fragment else None
            if fragment is not None and index is not None:
                state.eip = fragment.guest_eip_at(index)
        return state

    def guest_cpu(self) -> GuestCpu:
        eip = self.machine.uc.reg_read(_EIP)
        if self.vcpu.cpl == 0 and self.parked is None and self.cache.contains(eip):
            fragment = self.cache.fragment_at(eip)
            if fragment is None or eip not in fragment.boundaries:
                raise ResumeRefused("the CPU is inside translated code, between guest instructions")
        return super().guest_cpu()

    def load_guest_cpu(self, cpu: GuestCpu) -> None:
        """The translation cache is monitor state: emptied (its code was translated from the
        RAM the guest had before), and refilled from the resumed guest's kernel code."""
        self._flush()
        self.clock.clocked = self.vm.stats.by_class[InsnClass.TRANSLATED.value]  # ticked already
        super().load_guest_cpu(cpu)

    def guest_eip_running(self) -> int:
        """In the TC, the guest instruction whose translation the CPU is in, wherever in it;
        the one it is parked at when the monitor holds it."""
        if self.vcpu.cpl == 0 and self.parked is not None:
            return self.parked
        fragment = self._fragment_running()
        if fragment is None:
            return super().guest_eip_running()
        return fragment.guest_eip_at(_index_running(fragment, self.machine.uc.reg_read(_EIP)))

    def memory_access_eip(self) -> int:
        """Translated code runs with no instruction count, so inside a memory callback the
        CPU's EIP is the start of its block (unicorn fact 13). Each guest instruction that may
        touch memory stores its EIP in the vCPU area first: that one, if it is an
        instruction of this fragment at or after the block's start (a guest store into the
        area cannot pass for it: the store runs right before the access)."""
        eip = self.machine.uc.reg_read(_EIP)
        fragment = self.cache.fragment_at(eip) if self.vcpu.cpl == 0 else None
        if fragment is None or self.parked is not None:
            return super().memory_access_eip()
        noted = int.from_bytes(self.machine.read(self.area.geip, 4), "little")
        start = fragment.guest_eip_owning(eip)
        if any(i.address == noted for i in fragment.insns if i.address >= start):
            return noted
        return start

    def guest_interrupts_enabled(self) -> bool:
        return self.vcpu.interrupts_enabled

    def instruction_clock(self) -> int:
        """The PIT ticks for translated code only after an exit is handled, and a fragment
        pays for its callout on entry: a callout that reads the clock (RDMSR of the TSC)
        has the PIT ticked first and the callout itself taken off."""
        self.clock.sync()
        return super().instruction_clock() - 1

    # ------------------------------------------------------------------ exits
    def handle(self, exit_: Exit) -> None:
        kernel = self.vcpu.cpl == 0
        self._handle(exit_)
        self.fetch.deliver_pending()  # as the CPU does: before the run may end here
        if kernel:
            self.clock.sync()

    def _handle(self, exit_: Exit) -> None:
        if self.vcpu.cpl == 0:
            self._read_area()
        if self.selfmod.store_retry is not None and exit_.kind is ExitKind.STOP:
            self.selfmod.retry_store()
            return
        if self.vcpu.cpl == 3:  # user code ran directly: the trap-and-emulate rules apply
            super().handle(exit_)
            return
        if exit_.retired:
            self.vcpu.interrupt_shadow = False
        eip = self.machine.uc.reg_read(_EIP)
        kind = exit_.kind
        if kind is ExitKind.DOOR:
            self._door()
        elif kind is ExitKind.EXCEPTION:
            if exit_.vector == VEC_PF and self.mmu is not None and self.mmu.active:
                page_fault(self, self.mmu)  # translated code runs on the shadows too
            elif self._park_at(eip):
                self.deliver(exit_.vector or 0, "exception", 0)
        elif kind in (ExitKind.COUNT, ExitKind.STOP):
            # A stop in mid-fragment (a port write, a store retried): the fragment paid for
            # its whole block, so the guest is parked where it stands, at a boundary (the
            # stop takes effect at the end of unicorn's block: maybe on an exit stub), with
            # the count of what ran, before the PIT ticks for it or the run ends there.
            self.settle()
        else:
            super().handle(exit_)

    def before_slice(self, count: int) -> int:
        """A guest parked by the monitor re-enters the TC through its fragment's entry.
        Translated code keeps its own clock: it spends `count` guest instructions from the
        vCPU area's budget and calls the monitor when they are gone — so the CPU runs it
        with no per-instruction counting at all. Translated code looks for an interrupt
        only where IF may become 1 (STI, POPF): one raised between slices (a key typed at
        this step) is taken here, before the next instruction, or a guest spinning in
        `jmp $` would get it only when the budget runs out."""
        self.fetch.deliver_pending()
        if self.vcpu.cpl == 0 and self.vm.exit is None and self._interrupt_due():
            if self.parked is None:
                self.park_here()
            self.accept_interrupt()
        if self.vcpu.cpl != 0 or self.vm.exit is not None:
            return count
        if self.selfmod.self_checked_pages:
            review = self.selfmod.review()
            count = max(1, min(count, review - self.vm.step))
        count = self.clock.approach(min(count, TC_SLICE))
        if self.parked is not None and self.vm.exit is None:
            try:
                self.enter(self.virtual_state())
            except EntryError as err:  # its segments, reloaded from its GDT, are refused
                self.vm.finish(
                    ExitInfo(ExitReason.CRASHED, detail=f"cannot enter the guest: {err}")
                )
                return 0
            self.fetch.deliver_pending()
        self.clock.arm(count)
        return 0

    def park_here(self) -> None:
        """Before switching to stepping fragments: take the guest out of the fragment the
        CPU is in, at a guest instruction boundary."""
        eip = self.machine.uc.reg_read(_EIP)
        fragment = self.cache.fragment_at(eip)
        if fragment is not None and eip in fragment.boundaries:
            self._park_at(eip)
        else:
            self.settle()

    def _interrupt_due(self) -> bool:
        return self.vcpu.interrupts_enabled and self.vm.irqs.pending_vector() is not None

    def resume_faulted(self) -> None:
        """After a hidden page fault in translated code: the guest is parked at the guest
        instruction that faulted (its fragment paid for its whole block on entry: the
        count goes back to what ran) and goes on from there, through a fragment that
        starts at it."""
        in_tc = self.vcpu.cpl == 0 and self.parked is None
        if in_tc and not self._park_at(self.machine.uc.reg_read(_EIP), faulted=True):
            return
        super().resume_faulted()  # (the real state: CS and SS at RPL 1 already)

    def reflect_fault(self, vector: int, error_code: int) -> None:
        """A true fault in translated code: the guest gets it at the guest instruction
        whose translation faulted."""
        in_tc = self.vcpu.cpl == 0 and self.parked is None
        if in_tc and not self._park_at(self.machine.uc.reg_read(_EIP), faulted=True):
            return
        super().reflect_fault(vector, error_code)

    def _park_at(self, tc_eip: int, faulted: bool = False) -> bool:
        """Take the guest out of the TC at a guest instruction boundary: fix the count.
        `faulted`: an access of an inline sequence faulted before it changed anything the
        guest sees (its scratch registers are put back): the guest instruction it stands
        for had not begun."""
        fragment = self.cache.fragment_at(tc_eip)
        index = fragment.boundaries.get(tc_eip) if fragment else None
        if fragment is not None and index is None and faulted:
            index = sequence_faulted(self, fragment, tc_eip)
        if fragment is None or index is None:
            self.vm.finish(
                ExitInfo(
                    ExitReason.CRASHED,
                    None,
                    f"monitor error: TC address {tc_eip:#x} is not a boundary",
                )
            )
            return False
        self._spent()  # a prologue run since the exit (settling) paid for its block too
        passed = fragment.count_point is not None and tc_eip >= fragment.count_point
        counted = len(fragment.insns) if passed else 0
        if index != counted:
            self.clock.count(index - counted)
        self.parked = fragment.guest_eip_at(index)
        return True

    def settle(self) -> None:
        """Run single TC instructions until the CPU sits on a guest instruction boundary, so
        an interrupt can be delivered there (inline sequences are never split)."""
        m = self.machine
        for _ in range(64):
            eip = m.uc.reg_read(_EIP)
            fragment = self.cache.fragment_at(eip)
            if fragment is not None and eip in fragment.boundaries:
                self._park_at(eip)
                return
            if CANCEL.requested:  # Ctrl-C: the CPU runs nothing more (the run ends here)
                return
            self.vm.begin_slice()
            step = m.run(eip, 1)
            self.vm.end_slice(step.retired)
            if step.kind is not ExitKind.COUNT:
                self.handle(step)
                return
        self.vm.finish(ExitInfo(ExitReason.CRASHED, detail="monitor error: no boundary reached"))

    def _stale(self, fragment_id: int) -> None:
        """A self-checking fragment found its guest bytes changed: retranslate."""
        fragment = self.cache.fragments.get(fragment_id)
        if fragment is not None and fragment.valid:
            self.selfmod.drop(fragment, fragment.guest_start)
        self.parked = fragment.guest_start if fragment else None

    def _door(self) -> None:
        values = self._area_values  # read by handle() when the CPU left the TC
        exit_id = values["exit"]
        if exit_id == WINDOW_EXIT:  # accept_interrupt() follows this exit
            self.parked = values["resume_geip"]
        elif exit_id == LOOKUP_EXIT:
            self.parked = values["target"]
        else:
            stub = self.cache.exits.get(exit_id)
            if stub is None:
                self.vm.finish(
                    ExitInfo(ExitReason.CRASHED, detail=f"monitor error: exit {exit_id}")
                )
                return
            self.parked = stub.guest_eip
            if stub.kind is StubKind.CALLOUT:
                self._callout(stub.guest_eip)
            elif stub.kind is StubKind.STALE:
                self._stale(stub.fragment)
            elif stub.kind is StubKind.DEADLINE:  # left before counting: `index` instructions ran
                fragment = self.cache.fragments[stub.fragment]
                self.clock.count(stub.index)
                self.parked = fragment.guest_eip_at(stub.index)
            else:
                self._chain(stub.id)

    def _chain(self, stub_id: int) -> None:
        """First use of a branch exit: translate the target and link the jump to it."""
        stub = self.cache.exits[stub_id]
        try:
            target = self.fragment_for(stub.guest_eip)
        except PageFault as fault:  # the guest is parked at the branch target
            self.fetch.refused(fault)
            return
        if target is None:
            return
        source = self.cache.fragments.get(stub.fragment)
        linkable = (
            source is not None
            and not source.stepping
            and self.cache.chain_target(source.key, stub.guest_eip) is target
        )
        if source is not None and linkable and source.valid and stub.patch_at is not None:
            rel = (target.tc_start - (stub.patch_at + 4)) & 0xFFFFFFFF
            self.machine.write_monitor(stub.patch_at, rel.to_bytes(4, "little"))
            stub.chained_to = target.id
            target.links_in.add(stub.id)
            self.cache.stats.chains += 1
            self.vm.emit(FragmentChained(self.vm.name, self.vm.step, source.id, target.id))
        self.parked = None
        self._write_area()
        self.machine.set_registers(eip=target.tc_start)

    def _callout(self, guest_eip: int) -> None:
        """Emulate the instruction that ended the fragment, then continue after it."""
        insn = decode(self.fetch.read(guest_eip, 15), guest_eip)
        if insn is None:
            self.deliver(6, "exception")
            return
        if not self.clock.take():  # the slice ends before it: the guest waits parked there
            return
        self._trace_callout(insn)
        self.note_callout(trap_name(insn))
        self.vm.emit(Callout(self.vm.name, self.vm.step, guest_eip, insn.text))
        if insn.vector is not None and insn.flow.value == "int":
            self.parked = insn.next_address
            self.deliver(insn.vector, "software")
            return
        handler = EMULATORS.get(insn.mnemonic)
        if handler is None:
            self._unsupported(13, guest_eip, insn.text, "no emulation for it")
            return
        emulation = self._run_emulator(insn, handler, 13)
        if emulation is None:  # it faulted (or the VM stopped): it did not retire, but the
            self.clock.count(-1)  # fragment paid for it on entry
            return
        if emulation.flags is not None:
            self.machine.uc.reg_write(_EFLAGS, emulation.flags)
            emulation.state.eflags = self.vcpu.virtual_eflags(emulation.flags)
        if emulation.halt:
            self.parked = emulation.state.eip
            self._halt()
            return
        self.enter(emulation.state)

    def note_callout(self, name: str) -> None:
        stats = self.vm.stats
        stats.callouts[name] += 1
        stats.total += 1
        stats.by_class[InsnClass.TRANSLATED.value] += 1

    def _count_io(self, mnemonic: str) -> None:
        if self.vcpu.cpl == 0:  # in the TC: the I/O hook is a callout, not a trap
            self.vm.stats.callouts[mnemonic] += 1
        else:
            super()._count_io(mnemonic)

    # ------------------------------------------------------------------ self-modifying code
    def code_page_written(self, address: int, size: int, stored: bool = False) -> None:
        self.selfmod.page_written(address, size, stored)

    def forget_traced(self) -> None:
        """The traced instruction now running did not retire: it runs again from its start,
        where the tracer sees it begin again. (A store inside its translation, as a REP
        round's, runs again right there: the instruction stays the one in flight.)"""
        fragment = self._fragment_running()
        if fragment is None or self.machine.uc.reg_read(_EIP) in fragment.instruction_starts:
            self._pending = None

    # ------------------------------------------------------------------ tracing
    def _recording_tracer(self) -> Callable[[int, int], None] | None:
        """Translated code is traced by its own rules (`_trace`), never the fused path."""
        return None

    def _trace(self, eip: int, size: int) -> None:
        """In the TC, an instruction of translated code starts a guest instruction only at
        the first address of its translation; the rest (sequences, stubs) is not the guest's.
        At a boundary between guest instructions (before the clock, too, where one sits
        there) the previous one is done; a run that must end there stops there, with the
        guest's flags as they are."""
        if self.vcpu.cpl == 3 or not self.cache.contains(eip):
            super()._trace(eip, size)
            return
        fragment = self.cache.fragment_at(eip)
        if fragment is None or eip not in fragment.boundaries:
            return
        self._finish_traced()
        run_end = self.vm.run_end
        if run_end is not None and self.vm.stats.total >= run_end:
            # exactly there: this instruction does not run. The guest is parked, so that it
            # goes on through a fragment of its own (the clock of this one may have spent
            # the whole block already, and an untraced run counts by the clock)
            self.machine.request_stop()
            self.parked = fragment.guest_eip_at(fragment.boundaries[eip])
            return
        index = fragment.instruction_starts.get(eip)
        if index is None:
            return
        watch = self.vm.events.watch
        if watch is not None:  # guest instruction `total` begins: its registers, and from here
            # on its stores (inside its translation the state is the translation's own)
            watch(self.vm.stats.total, self.machine.trace_registers())
        if index == 0:
            fragment.hits += 1
        insn = fragment.insns[index]
        self._pending = Traced(0, insn.address, insn, 0, subkind=fragment.subkinds[index])
        self._pending_trapped = False

    def _finish_traced(self) -> None:
        """A traced run counts a translated instruction when the next one starts, or after
        the exit that followed it: the PIT ticks for it then, before the monitor reads the
        timer's next deadline (else the next slice would end a step late)."""
        super()._finish_traced()
        self.clock.sync()

    def _emit_translated(self, insn: Instruction, subkind: str) -> None:
        self.executed(self.vm.step, insn.address, insn, InsnClass.TRANSLATED, 0, False, subkind)

    def _trace_callout(self, insn: Instruction) -> None:
        if self.tracing:
            self._finish_traced()
            self._emit_translated(insn, "callout")


def _index_running(fragment: Fragment, tc_eip: int) -> int:
    """The guest instruction the CPU is in at `tc_eip`, by its index in the fragment."""
    index = fragment.boundaries.get(tc_eip)  # (a boundary before an EIP note: the next one)
    return fragment.index_owning(tc_eip) if index is None else index
