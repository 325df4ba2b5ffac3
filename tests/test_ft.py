"""Fault-tolerant pairs on real host processes: the backup replays the primary's input log in
lock-step and, when the primary's host is killed, goes live with no guest-visible loss."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hypervisor.encap.wire import HostError
from hypervisor.guest.image import load_for_mode
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.inputs import Input, InputDevice, InputScript
from hypervisor.vmm.vm import Vm
from vmlab.cli import main
from vmlab.cluster import Cluster

KEYS = ("hi", " there")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    started = Cluster.start(2, every=3600.0)  # no replicas: FT alone must save the VM
    yield started
    started.stop()


def uninterrupted() -> str:
    inputs = InputScript(tuple(Input(InputDevice.KEYBOARD, k) for k in KEYS))
    vm = Vm(load_for_mode("course", Mode.TRAP), Mode.TRAP, inputs=inputs)
    vm.run(5_000_000)
    return vm.console.decode("latin-1")


def settle(cluster: Cluster, vm: str, ending: str, host: int | None = None) -> str:
    """The console of `vm` (on its host, or on `host`) once it ends with `ending`."""
    deadline = time.monotonic() + 60
    while True:
        if host is None:
            console = cluster.console(vm)
        else:
            console = cluster.call(cluster.hosts[host], "console", vm=vm, since=0)[1].decode()
        if console.endswith(ending):
            return console
        assert time.monotonic() < deadline, console[-80:]
        time.sleep(0.05)


def test_the_backup_takes_over_with_nothing_lost(cluster: Cluster) -> None:
    cluster.fault_tolerant("course", "trap", "k")
    cluster.give("k", "keyboard", KEYS[0])  # logged to the backup before this returns
    cluster.kill("host-1")  # the primary dies mid-boot, its input not delivered yet
    notes = cluster.tick()
    assert notes[0] == "host-1 died" and "k: FT takeover on host-2" in notes[1]
    cluster.give("k", "keyboard", KEYS[1])
    assert settle(cluster, "k", "> hi there") == uninterrupted()


def test_lock_step_and_output_commit(cluster: Cluster) -> None:
    """The backup never runs past what the primary logged, and the console the primary
    released is one the backup has reached (so a takeover can lose none of it)."""
    cluster.fault_tolerant("course", "trap", "k")
    cluster.give("k", "keyboard", KEYS[0])
    released = settle(cluster, "k", "> hi")
    primary, backup = (cluster.call(h, "list")[0]["vms"][0] for h in cluster.hosts)
    assert (primary["role"], backup["role"]) == ("primary", "backup")
    assert backup["step"] <= primary["step"] and primary["lag"] >= 0
    assert primary["log_bytes"] > 0
    assert settle(cluster, "k", "> hi", host=1) == released


def test_the_cluster_command_starts_a_pair(capsys: pytest.CaptureFixture[str]) -> None:
    actions = ["ft course trap k", "type k hi", "kill host-1", "tick", "status"]
    assert main(["cluster", "--hosts", "2", *actions]) == 0
    out = capsys.readouterr().out
    assert "k runs on host-1, its FT backup on host-2" in out
    assert "FT takeover on host-2" in out and "FT took over" in out


def test_two_pairs_back_each_other_up(cluster: Cluster) -> None:
    """Each host is one pair's primary and the other's backup: neither waits on the other
    (a record goes out without waiting for its acknowledgement)."""
    cluster.fault_tolerant("hog", "native", "p")  # primary host-1, backup host-2
    assert "k runs on host-2, its FT backup on host-1" in cluster.fault_tolerant(
        "course", "trap", "k"
    )
    cluster.give("k", "keyboard", KEYS[0])
    assert settle(cluster, "k", "> hi").endswith("> hi")
    primary = next(v for v in cluster.call(cluster.hosts[0], "list")[0]["vms"] if v["name"] == "p")
    assert primary["role"] == "primary" and primary["log_bytes"] > 0


def test_a_pair_stays_where_it_runs(cluster: Cluster) -> None:
    cluster.fault_tolerant("course", "trap", "k")
    with pytest.raises(HostError, match="one of an FT pair"):
        cluster.migrate("k", cluster.hosts[1])
    assert cluster.placed["k"] == "host-1"
