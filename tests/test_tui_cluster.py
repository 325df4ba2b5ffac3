"""The cluster view of the UI, against real host processes: hosts, VMs and load, events,
and a followed VM whose console, screen and registers come from the host it runs on now —
after a migration, from its new host; after an FT takeover, from its backup's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import pytest

from hypervisor.encap import vmfile
from hypervisor.encap.clusterwatch import (
    ClusterView,
    ClusterWatch,
    Followed,
    HostRow,
    Migration,
    VmRow,
)
from hypervisor.encap.state import capture
from hypervisor.encap.wire import HostClient
from hypervisor.guest.image import load_guest
from hypervisor.machine.hostram import PAGE
from hypervisor.vmm.vm import Vm
from tests.test_tui import synchronously
from tui.cluster import ClusterApp, migrations_text
from vmlab.cluster import Cluster
from vmlab.clusterserve import ClusterServer

TOKEN = "a-token-for-the-cluster-view"


@pytest.fixture
def live() -> Iterator[tuple[Cluster, ClusterServer]]:
    cluster = Cluster.start(2, every=0.0, token=TOKEN)
    server = ClusterServer(cluster)
    yield cluster, server
    server.close()
    cluster.stop()


async def until(app: ClusterApp, holds: Callable[[ClusterView], bool]) -> ClusterView:
    for _ in range(1200):  # a minute at most (the hosts share a loaded machine)
        view = app.view
        if view is not None and holds(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"the view never came: {app.view}")


def on(vm: str, host: str) -> Callable[[ClusterView], bool]:
    return lambda v: v.followed is not None and (v.followed.vm, v.followed.host) == (vm, host)


async def following(
    app: ClusterApp, vm: str, host: str, event: str = ""
) -> tuple[ClusterView, Followed]:
    """The view once it follows `vm` on `host` (and tells `event`), and what it shows of it."""
    view = await until(app, lambda v: on(vm, host)(v) and any(event in e for e in v.events))
    assert view.followed is not None
    return view, view.followed


def test_the_view_follows_a_vm_across_a_migration_and_a_takeover(live) -> None:
    cluster, server = live
    cluster.create("hog", "native", "a")
    cluster.fault_tolerant("course", "trap", "k")  # primary on host-2, backup on host-1
    cluster.give("k", "keyboard", "hi")
    watch = ClusterWatch(server.address, TOKEN)

    @synchronously
    async def drive() -> None:
        app = ClusterApp(watch.poll, server.address, interval=0.05)
        async with app.run_test(size=(160, 50)):
            view, a = await following(app, "a", "host-1")
            assert "hog" in a.console  # its console, from host-1
            await asyncio.to_thread(cluster.migrate, "a", cluster.hosts[1])
            view, a = await following(app, "a", "host-2", "a host-1 → host-2")
            assert a.step > 0 and dict(a.registers)["eip"] and "hog" in a.console
            app.action_follow_next()
            view, k = await following(app, "k", "host-2")
            assert k.console.endswith("> hi")
            await asyncio.to_thread(cluster.kill, "host-2")
            await asyncio.to_thread(cluster.tick)
            view, k = await following(app, "k", "host-1", "FT takeover on host-1")
            assert k.console.endswith("> hi")  # the backup took over: nothing lost
            assert [h.state for h in view.hosts] == ["up", "dead"]

    try:
        drive()
    finally:
        watch.close()


CANNED = ClusterView(
    hosts=(
        HostRow("host-1", "127.0.0.1:40001", "up", 2),
        HostRow("host-2", "127.0.0.1:40002", "maintenance", 1),
        HostRow("host-3", "127.0.0.1:40003", "dead", 0),
    ),
    vms=(
        VmRow("web", "host-1", "running", "bt", 1_234_567, "", ""),
        VmRow("k", "host-1", "running", "trap", 60_396, "primary", "host-2"),
        VmRow("db", "host-2", "running", "native", 9_876_543, "", ""),
    ),
    migrations=(Migration("db", "host-2", "host-1", 1, 700, 1024),),
    events=(
        "web placed on host-1 (the least loaded)",
        "k runs on host-1, its FT backup on host-2",
        "host-3 died",
        "k: FT takeover on host-1 at step 60,396, nothing lost",
    ),
    followed=Followed(
        "k",
        "host-1",
        60_396,
        "course kernel\nentering ring 3\nhello from ring 3, cpl 3\n> hi",
        ("course kernel", "> hi"),
        (("eax", 0x1234), ("eip", 0xC0100000), ("esp", 0x9F000)),
    ),
)


def test_the_cluster_view_snapshot(snap_compare) -> None:
    app = ClusterApp(lambda follow: CANNED, "127.0.0.1:40000", interval=0.05)
    assert snap_compare(app, terminal_size=(160, 50), run_before=_settle)


async def _settle(pilot) -> None:
    await until(pilot.app, lambda v: True)
    await pilot.pause()


def test_a_migration_in_progress_shows_its_round_and_pages(live) -> None:
    """The destination host tells the pages it holds and the round while the source is busy
    sending them (here a client plays the source, one round at a time)."""
    cluster, server = live
    vm = Vm(load_guest("hog"), "native")
    vm.run(1_000)
    source = HostClient(cluster.hosts[1].address, TOKEN)
    watch = ClusterWatch(server.address, TOKEN)
    try:
        source.call("mig_open", vmfile.to_bytes(capture(vm, with_ram=False)))
        pages = [page * PAGE for page in range(256, 272)]
        source.call("mig_pages", vmfile.encode_runs(vm.machine.read, pages), round=0)
        (moving,) = watch.poll(None).migrations
        assert (moving.vm, moving.target, moving.round, moving.pages) == ("hog", "host-2", 0, 16)
        assert migrations_text(watch.poll(None)).endswith(f"16/{moving.ram_pages:,} pages")
        source.call("mig_pages", vmfile.encode_runs(vm.machine.read, pages[:4]), round=1)
        assert watch.poll(None).migrations[0].round == 1
        source.close()  # the source gave up: the destination drops what it prepared
        for _ in range(100):
            if not watch.poll(None).migrations:
                break
            time.sleep(0.05)
        assert watch.poll(None).migrations == ()
    finally:
        watch.close()
        vm.machine.release()
