"""Live migration, in one process: pre-copy rounds while the VM runs, a short stop and copy,
the guest's output equal to an unmigrated run's; a destination failing at any phase leaves
the VM running on the source with nothing lost."""

from __future__ import annotations

import pytest

from hypervisor.encap.migration import MigrationFailed, Receiver, migrate
from hypervisor.guest.image import load_guest
from hypervisor.vmm.vm import Vm

END = 3_000_000


def straight(sample: str, mode: str) -> Vm:
    vm = Vm(load_guest(sample), mode)
    vm.run(END)
    return vm


@pytest.mark.parametrize(("sample", "mode"), [("timer", "trap"), ("selfmod", "bt")])
def test_a_migrated_vm_prints_what_an_unmigrated_one_prints(sample: str, mode: str) -> None:
    vm = Vm(load_guest(sample), mode)
    vm.run(20_000)
    receiver = Receiver(64 << 20)
    report = migrate(vm, receiver, vm.run, slice_steps=2_000)
    assert report.migrated, report.failure
    assert report.rounds[0].pages > 0 and len(report.rounds) >= 2
    assert receiver.started and receiver.vm is not None
    moved = receiver.vm
    moved.run(END - moved.step)
    vm.machine.release()
    expected = straight(sample, mode)
    assert bytes(moved.console) == bytes(expected.console)
    assert (moved.exit, moved.stats.total) == (expected.exit, expected.stats.total)


class Dies(Receiver):
    """A destination that fails at one phase, as a killed process would."""

    def __init__(self, phase: str) -> None:
        super().__init__(64 << 20)
        self.phase = phase

    def _maybe(self, phase: str) -> None:
        if phase == self.phase:
            raise ConnectionResetError(f"the destination died at {phase}")

    def open(self, state: bytes) -> None:
        self._maybe("open")
        super().open(state)

    def pages(self, number: int, data: bytes) -> None:
        self._maybe(f"round {number}")
        super().pages(number, data)

    def commit(self, state: bytes) -> str:
        self._maybe("commit")
        return super().commit(state)

    def go(self) -> None:
        self._maybe("go")
        super().go()

    def abort(self) -> None:
        super().abort()
        raise MigrationFailed("and cannot be told to abort")


@pytest.mark.parametrize("phase", ["open", "round 0", "round 1", "commit", "go"])
def test_the_vm_goes_on_at_the_source_whenever_the_destination_dies(phase: str) -> None:
    vm = Vm(load_guest("timer"), "trap")
    vm.run(20_000)
    report = migrate(vm, Dies(phase), vm.run, slice_steps=20_000, stop_at=0)
    assert not report.migrated and phase in report.failure
    assert vm.machine.dirty_log is None
    vm.run(END - vm.step)
    expected = straight("timer", "trap")
    assert bytes(vm.console) == bytes(expected.console)
    assert (vm.exit, vm.stats.total) == (expected.exit, expected.stats.total)


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_a_run_under_dirty_logging_is_exact_and_logs_the_pages_written(mode: str) -> None:
    """Every first store into a page faults, is logged and runs again: the guest cannot
    tell (selfmod: bt's own write-protected code pages and the log's, on the same pages)."""
    vm = Vm(load_guest("selfmod"), mode)
    vm.run(5_000)
    vm.machine.start_dirty_log()
    logged = set()
    for _ in range(10):
        vm.run(3_000)
        logged.update(vm.machine.take_dirty())
    vm.machine.stop_dirty_log()
    assert logged, "the guest writes its stack at least"
    vm.run(END - vm.step)
    expected = straight("selfmod", mode)
    assert bytes(vm.console) == bytes(expected.console)
    assert (vm.exit, vm.stats.total) == (expected.exit, expected.stats.total)
