"""Keeping translated code true to the guest's bytes (the role of QEMU's tb-maint.c): the
guest pages that hold translated code are write-protected; a store that changes translated
bytes invalidates those fragments (unlinked: no chained jump enters them again); a store that
only writes data sharing such a page, and keeps doing so, is handled by adaptive
retranslation — redirected through a writable alias of the page, or the page's fragments
check their own bytes on entry for a while.

Pages here are guest-physical frames (the frames fragments were read from): unicorn's write
protection applies to physical memory, so a store through any virtual mapping of a code
page faults, and its hook reports the physical address. The writable alias is used only
without guest paging (it bypasses the guest's page tables); with paging on, a page that
keeps taking data stores checks itself instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unicorn.x86_const import UC_X86_REG_EIP as _EIP

from hypervisor.events import AdaptiveRetranslation, FragmentInvalidated
from hypervisor.isa import Instruction
from hypervisor.machine.hostram import PAGE
from hypervisor.machine.machine import ExitKind
from hypervisor.vmm.bt.cache import Fragment
from hypervisor.vmm.bt.translator import absolute_store

if TYPE_CHECKING:
    from hypervisor.vmm.bt.executor import BinaryTranslation

ALIAS_SLOTS = 16
ADAPT_AFTER = 4  # data-only faults before adaptive retranslation
PROBATION = 50_000  # guest instructions a page stays self-checking before it is traced again


class SelfModifyingCode:
    """The pages of one VM's translated code, and what its stores to them have caused."""

    def __init__(self, bt: BinaryTranslation, alias_base: int) -> None:
        self.bt = bt
        self.alias_base = alias_base  # ALIAS_SLOTS pages; a slot in use maps a guest page
        self.alias_slots: dict[int, int] = {}  # guest page -> alias slot address
        self.store_faults: dict[int, int] = {}  # guest EIP of a store -> data-only faults
        self.self_checked_pages: dict[int, int] = {}  # page -> step to trace it again
        self.self_check_rounds: dict[int, int] = {}  # page -> times it became self-checking
        self.store_retry: set[int] | None = None  # the pages of a store to run again alone
        self.helper_fault: tuple[int, int] | None = None  # (EIP, step) of a helper's last store

    def track(self, fragment: Fragment) -> None:
        """A new fragment: write-protect its guest frames (unless they check themselves)."""
        for frame in fragment.frames:
            if frame not in self.self_checked_pages:
                self.bt.machine.protect_code_page(frame, True)

    def untrack_all(self) -> None:
        """The cache is flushed: no page holds translated code any more."""
        for page in self.bt.cache.traced_pages:
            self.bt.machine.protect_code_page(page, False)

    def is_self_checked(self, frame: int) -> bool:
        return frame in self.self_checked_pages

    def page_written(self, address: int, size: int, stored: bool = False) -> None:
        """A store hit a write-protected page holding translated code. If it changed
        translated bytes, those fragments go. If it only wrote data sharing the page, nothing
        is invalidated; and when the same store keeps faulting, adaptive binary translation
        retranslates it so that it stops: a store to a fixed address is redirected through
        a writable alias of the page (the page stays traced for everyone else); any other
        store makes the page self-checking instead. `stored`: the machine makes this store
        itself (one it cannot restart): the page stays protected while it holds translated
        code, and the CPU leaves a fragment the store invalidated at the end of its block
        (the rest of that block is translated from the bytes before the store). Such an
        instruction may store many times (FXSAVE: 32 stores): it counts as one fault."""
        bt = self.bt
        pages = {address & ~(PAGE - 1), (address + size - 1) & ~(PAGE - 1)}
        eip = bt.machine.uc.reg_read(_EIP)
        here = bt.cache.fragment_at(eip)
        counted = not stored or self.helper_fault != (eip, bt.vm.step)
        self.helper_fault = (eip, bt.vm.step) if stored else None
        leave = False
        for page in pages:
            hit = bt.cache.overlapping(page, address, address + size)
            for fragment in hit:
                self.drop(fragment, address)
                leave = leave or fragment is here
            if not hit and counted:
                self._data_store_fault(page, address, here)
            if not stored or not bt.cache.overlapping(page, page, page + PAGE):
                bt.machine.protect_code_page(page, False)
        if not stored:
            self.store_retry = pages
        elif leave:
            bt.machine.request_stop()

    def _data_store_fault(self, page: int, address: int, here: Fragment | None) -> None:
        store = self._faulting_instruction(here)
        key = store.address if store is not None else -page
        faults = self.store_faults.get(key, 0) + 1
        self.store_faults[key] = faults
        if faults < ADAPT_AFTER:
            return
        target = absolute_store(store) if store is not None else None
        unpaged = here is not None and not here.paged
        if store is not None and target is not None and unpaged and self._alias(store, page, here):
            bt = self.bt
            bt.cache.stats.adaptive += 1
            bt.vm.emit(
                AdaptiveRetranslation(
                    bt.vm.name, bt.vm.step, page, faults, address, store.address, "alias"
                )
            )
        elif page not in self.self_checked_pages:
            self._self_check(page, faults, address)

    def _faulting_instruction(self, here: Fragment | None) -> Instruction | None:
        if here is None:
            return None
        index = here.instruction_starts.get(self.bt.machine.uc.reg_read(_EIP))
        return here.insns[index] if index is not None else None

    def _alias(self, store: Instruction, page: int, here: Fragment | None) -> bool:
        slot = self.alias_slots.get(page)
        if slot is None:
            if len(self.alias_slots) >= ALIAS_SLOTS:
                return False
            slot = self.alias_base + len(self.alias_slots) * PAGE
            self.bt.machine.alias_ram_page(slot, page)
            self.alias_slots[page] = slot
        self.bt.translator.aliased_stores[store.address] = slot - page
        if here is not None:
            self.drop(here, store.address)
        return True

    def _self_check(self, page: int, faults: int, address: int) -> None:
        bt = self.bt
        rounds = self.self_check_rounds.get(page, 0) + 1
        self.self_check_rounds[page] = rounds
        self.self_checked_pages[page] = bt.vm.step + (PROBATION << (rounds - 1))
        for fragment in bt.cache.overlapping(page, page, page + PAGE):
            self.drop(fragment, address)
        bt.cache.stats.adaptive += 1
        bt.vm.emit(
            AdaptiveRetranslation(bt.vm.name, bt.vm.step, page, faults, address, None, "self-check")
        )

    def review(self) -> int:
        """Self-checking costs every entry a comparison of the block's bytes. The stores that
        made a page self-checking often run once (a kernel filling its tables at boot) while
        its code stays hot: after a probation the page is write-protected again and its
        fragments are retranslated without checks. If it keeps faulting it returns to
        self-checking, for twice as long each time. Returns the step of the next review."""
        bt = self.bt
        step = bt.vm.step
        for page, until in list(self.self_checked_pages.items()):
            if step < until:
                continue
            del self.self_checked_pages[page]
            for fragment in bt.cache.overlapping(page, page, page + PAGE):
                self.drop(fragment, page)
            bt.cache.stats.adaptive += 1
            bt.vm.emit(AdaptiveRetranslation(bt.vm.name, step, page, 0, page, None, "traced"))
        return min(self.self_checked_pages.values(), default=step + (1 << 31))

    def drop(self, fragment: Fragment, written: int) -> None:
        """Invalidate a fragment whose guest bytes were (or may have been) written."""
        bt = self.bt
        bt.cache.invalidate(fragment)
        self._unlink(fragment)
        bt.vm.emit(
            FragmentInvalidated(bt.vm.name, bt.vm.step, fragment.id, fragment.guest_start, written)
        )

    def retry_store(self) -> None:
        """Run the store on the unprotected page, protect the page again while it still
        holds translated code, and park the guest past the store."""
        bt = self.bt
        pages = self.store_retry or set()
        self.store_retry = None
        bt.forget_traced()  # the store did not retire: it runs (and is traced) again now
        m = bt.machine
        bt.vm.begin_slice()
        step = m.run(m.uc.reg_read(_EIP), 1)
        bt.vm.end_slice(step.retired)
        for page in pages - self.self_checked_pages.keys():
            if bt.cache.overlapping(page, page, page + PAGE):
                m.protect_code_page(page, True)
        if step.kind is not ExitKind.COUNT:
            bt.handle(step)
        elif bt.vcpu.cpl == 0:  # out of the fragment (it paid for its whole block): a run
            bt.settle()  # may end now, with the guest past the store

    def _unlink(self, fragment: Fragment) -> None:
        """Chained jumps into the fragment go back to their exit stubs."""
        for stub_id in fragment.links_in:
            stub = self.bt.cache.exits.get(stub_id)
            if stub is None or stub.patch_at is None or stub.stub_address is None:
                continue
            rel = (stub.stub_address - (stub.patch_at + 4)) & 0xFFFFFFFF
            self.bt.machine.write_monitor(stub.patch_at, rel.to_bytes(4, "little"))
            stub.chained_to = None
        fragment.links_in.clear()
