"""Random lifecycles of VMs on one host (hypothesis, stateful): create, run, pause, resume and
destroy in any order never make two VMs share host memory, freed memory is used again, and a
paused VM's RAM does not change, whatever the others do."""

from __future__ import annotations

import ctypes
import itertools
import zlib

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hypervisor.guest.image import load_guest
from hypervisor.machine.hostram import HostRam, OutOfHostMemory
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.host import Host, LifecycleError

MiB = 1 << 20
HOST_RAM = 12 * MiB  # room for three to six VMs: creation fails now and then
GUESTS = ("hello", "hog")


def ram_checksum(host: Host, name: str) -> int:
    ram = host[name].vm.machine.ram
    return zlib.crc32(ctypes.string_at(host.ram.base_address + ram.start, ram.size))


class HostLifecycle(RuleBasedStateMachine):
    @initialize()
    def boot(self) -> None:
        self.host = Host(HOST_RAM, quantum=1_000)
        self.images = {name: load_guest(name) for name in GUESTS}
        self.paused: dict[str, int] = {}  # paused VM -> checksum of its RAM when paused

    def _fits(self, size: int) -> bool:
        return any(e.owner == "free" and e.end - e.start >= size for e in self.host.memory_map())

    @rule(
        guest=st.sampled_from(GUESTS),
        mode=st.sampled_from(list(Mode)),
        mib=st.integers(2, 4),
    )
    def create(self, guest: str, mode: str, mib: int) -> None:
        fits = self._fits(mib * MiB)
        try:
            hosted = self.host.create(self.images[guest], mode, ram_size=mib * MiB)
        except OutOfHostMemory:
            assert not fits, "a free range was large enough"
            return
        assert fits
        assert hosted.state == "created"

    @rule(limit=st.integers(1, 20_000))
    def run(self, limit: int) -> None:
        self.host.run(limit)

    @precondition(lambda self: self.host.vms)
    @rule(data=st.data())
    def pause(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.host.vms)))
        live = self.host[name].state in ("created", "running")
        try:
            self.host.pause(name)
        except LifecycleError:
            assert not live
            return
        assert live
        self.paused[name] = ram_checksum(self.host, name)

    @precondition(lambda self: self.paused)
    @rule(data=st.data())
    def resume(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.paused)))
        self.host.resume(name)
        del self.paused[name]
        assert self.host[name].state != "paused" or self.host[name].vm.state == "paused"

    @precondition(lambda self: self.host.vms)
    @rule(data=st.data())
    def destroy(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.host.vms)))
        size = self.host[name].vm.machine.ram.size
        start = self.host[name].vm.machine.ram.start
        self.host.destroy(name)
        self.paused.pop(name, None)
        assert name not in self.host.vms
        # Freed memory is reusable at once: a VM as large fits (first fit: no later than it).
        again = self.host.create(self.images["hello"], "native", ram_size=size, name="reuse")
        assert again.vm.machine.ram.start <= start

    @invariant()
    def memory_map_is_a_partition_of_host_ram(self) -> None:
        entries = self.host.memory_map()
        assert entries[0].start == 0 and entries[-1].end == HOST_RAM
        for a, b in itertools.pairwise(entries):
            assert a.end == b.start, "ranges overlap or leave a hole"
            assert not (a.owner == b.owner == "free"), "two free ranges side by side"
        owners = {e.owner: (e.start, e.end) for e in entries if e.owner != "free"}
        assert owners == {
            name: (h.vm.machine.ram.start, h.vm.machine.ram.end)
            for name, h in self.host.vms.items()
        }

    @invariant()
    def paused_vms_do_not_change(self) -> None:
        for name, checksum in self.paused.items():
            assert self.host[name].state == "paused"
            assert ram_checksum(self.host, name) == checksum


HostLifecycle.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
test_host_lifecycle = HostLifecycle.TestCase


def test_a_slice_given_again_starts_zeroed() -> None:
    # Host RAM is an anonymous mapping zeroed lazily (MADV_DONTNEED): a VM started where a
    # finished one ran must not see its pages (with a shared mapping it did, a lesson's
    # revert compared RAM holding another VM's leftovers).
    ram = HostRam(1 << 20)
    first = ram.allocate(64 << 10, "first")
    ctypes.memset(ram.pointer(first), 0xAB, first.size)
    ram.free(first)
    second = ram.allocate(64 << 10, "second")
    assert ram.pointer(second) == ram.pointer(first)
    assert ctypes.string_at(ram.pointer(second), second.size) == bytes(second.size)
