"""A cluster of real host processes: placement on the least loaded host, balancing and
maintenance by live migration, failover from replicas when a host process is killed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmlab.cli import main
from vmlab.cluster import Cluster


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    started = Cluster.start(3, every=0.0)  # a replica at every tick
    yield started
    started.stop()


def where(cluster: Cluster) -> dict[str, str]:
    return dict(cluster.placed)


def test_placement_balancing_and_maintenance(cluster: Cluster) -> None:
    for name in ("a", "b", "c"):
        cluster.create("hog", "native", name)
    assert where(cluster) == {"a": "host-1", "b": "host-2", "c": "host-3"}
    cluster.placed["c"] = "host-1"  # as if c had been put there by hand: 2, 1, 0
    cluster.call(cluster.hosts[2], "destroy", vm="c")
    cluster.call(cluster.hosts[0], "create", guest="hog", mode="native", name="c")
    assert "→ host-3" in " ".join(cluster.balance())
    assert sorted(cluster.load(h) for h in cluster.hosts) == [1, 1, 1]
    notes = cluster.maintenance("host-2")
    assert cluster.load(cluster.hosts[1]) == 0 and "in maintenance" in notes[-1]
    names = {vm["name"] for h in cluster.live() for vm in cluster.call(h, "list")[0]["vms"]}
    assert names == {"a", "b", "c"}  # nothing lost on the way
    assert "host-2" not in cluster.create("hog", "native", "d")  # no placement there


def test_a_killed_hosts_vms_restart_elsewhere_from_their_replicas(cluster: Cluster) -> None:
    cluster.create("hog", "native", "h")
    console = cluster.console("h")
    cluster.tick()  # replicas taken
    replica = cluster.replicas["h"]
    cluster.kill("host-1")
    notes = cluster.tick()
    assert notes[0] == "host-1 died" and "h restarted on host-2" in notes[1]
    assert cluster.placed["h"] == "host-2"
    vms = cluster.call(cluster.hosts[1], "list")[0]["vms"]
    assert [(v["name"], v["state"]) for v in vms] == [("h", "running")]
    assert vms[0]["step"] >= replica.step
    assert cluster.console("h") == console


def test_the_cluster_command(capsys: pytest.CaptureFixture[str]) -> None:
    actions = ["create hog native", "create hog native", "tick", "kill host-1", "tick", "status"]
    assert main(["cluster", "--hosts", "2", "--replicate-every", "0", *actions]) == 0
    out = capsys.readouterr().out
    assert "hog-2 placed on host-2" in out and "hog restarted on host-2" in out
    assert "host-1 died" in out and "(dead)" in out
