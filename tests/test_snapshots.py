"""Snapshots and revert: a reverted VM is exactly a fresh run to the same step; the tree
grows branches; a kernel misconfigured mid-run crashes, is reverted and runs again."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hypervisor.encap.snapshots import SnapshotError, SnapshotTree
from hypervisor.encap.state import capture, restore
from hypervisor.guest.image import load_guest
from hypervisor.vmm.vm import Vm

END = 400_000


def fresh(sample: str, mode: str, steps: int) -> Vm:
    vm = Vm(load_guest(sample), mode)
    vm.run(steps)
    return vm


@pytest.mark.parametrize(("sample", "mode"), [("timer", "trap"), ("syscalls", "native")])
def test_revert_is_exactly_a_fresh_run_to_the_same_step(sample: str, mode: str) -> None:
    vm = fresh(sample, mode, 7_000)
    tree = SnapshotTree()
    tree.take(vm, "early")
    vm.run(15_000)
    tree.take(vm, "later")
    reverted = tree.revert("early")
    assert capture(reverted) == capture(fresh(sample, mode, 7_000))  # CPU, RAM, devices, console
    reverted.run(END)
    straight = fresh(sample, mode, 7_000 + END)
    assert bytes(reverted.console) == bytes(straight.console)
    assert (reverted.exit, reverted.stats.total) == (straight.exit, straight.stats.total)


def test_the_tree_branches_from_the_snapshot_reverted_to() -> None:
    vm = fresh("timer", "native", 1_000)
    tree = SnapshotTree()
    tree.take(vm, "boot")
    vm.run(2_000)
    tree.take(vm, "a")
    vm = tree.revert("boot")
    vm.run(500)
    tree.take(vm, "b")
    assert [(r.depth, r.snapshot.name, r.current) for r in tree.rows()] == [
        (0, "boot", False),
        (1, "b", True),  # taken at step 1,500: before a (3,000)
        (1, "a", False),
    ]
    tree.delete("boot")
    assert [(r.depth, r.snapshot.name) for r in tree.rows()] == [(0, "b"), (0, "a")]
    with pytest.raises(SnapshotError, match="no snapshot named 'boot'"):
        tree.revert("boot")
    with pytest.raises(SnapshotError, match="already"):
        tree.take(vm, "a")


@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_a_kernel_misconfigured_mid_run_is_reverted_and_runs_again(mode: str) -> None:
    """The universal undo: the timer kernel's IDT is lost mid-run (as a bad LIDT would
    leave it); its next timer interrupt has no handler and it triple-faults. Reverted to the
    snapshot taken before, it runs to its normal end."""
    vm = fresh("timer", mode, 20_000)
    tree = SnapshotTree()
    tree.take(vm, "good")
    broken = capture(vm)
    vm = restore(replace(broken, cpu=replace(broken.cpu, idtr=(0, 0))))
    vm.run(END)
    assert vm.exit is not None and vm.exit.reason == "crashed"
    vm = tree.revert("good")
    vm.run(END)
    straight = fresh("timer", mode, 20_000 + END)
    assert vm.exit == straight.exit and vm.exit is not None and vm.exit.reason == "debug_exit"
    assert bytes(vm.console) == bytes(straight.console)
