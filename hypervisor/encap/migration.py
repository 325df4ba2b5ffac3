"""Live migration by pre-copy: move a running VM's RAM while it runs, then stop it briefly.

1. Dirty logging on (every RAM page write-protected, dirtylog.py).
2. Round 0: every non-zero page goes to the destination while the VM keeps running between
   chunks.
3. Rounds 1…: the pages it dirtied meanwhile, again while it runs — until few enough are
   left (or the rounds run out, or the set stops shrinking).
4. Stop and copy: the VM stops; the last dirty pages and its CPU and device state (a .vmlab
   with no RAM in it) go over; the destination rebuilds the VM and answers with a digest of
   the RAM it holds, which must be the source's.
5. Go: the destination starts the VM and confirms; only then may the source release it.

Any failure before the confirmation leaves the VM where it was: the dirty log comes off and
the source goes on running it, with nothing lost. The transport is the caller's (the host
processes' TCP protocol, or a direct call in tests).
"""

from __future__ import annotations

import hashlib
import struct
import time
import zlib
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Protocol

from hypervisor.encap import vmfile
from hypervisor.encap.state import apply, capture, prepare
from hypervisor.events import EventLog
from hypervisor.machine.hostram import PAGE, RamPool
from hypervisor.machine.machine import Machine
from hypervisor.vmm.vm import Vm

CHUNK_PAGES = 256  # pages sent between two slices of the VM's run
MAX_ROUNDS = 8
STOP_AT = 64  # dirty pages few enough to stop and copy


class MigrationFailed(RuntimeError):
    """The destination or the connection failed: the VM stays on the source."""


class Destination(Protocol):
    def open(self, state: bytes) -> None:
        """Get ready for the VM `state` describes (a .vmlab with no RAM yet)."""
        ...

    def pages(self, number: int, data: bytes) -> None: ...

    def commit(self, state: bytes) -> str:
        """Rebuild the VM from `state` and the pages; the hex SHA-256 of its RAM."""
        ...

    def go(self) -> None:
        """Start the VM; returns once the destination confirms it runs."""
        ...

    def abort(self) -> None: ...


@dataclass(frozen=True)
class Round:
    number: int
    pages: int
    bytes: int
    seconds: float


@dataclass(frozen=True)
class MigrationReport:
    vm: str
    rounds: tuple[Round, ...]
    total_seconds: float
    downtime_seconds: float  # from the VM's stop to the destination's confirmation
    downtime_instructions: int  # what the VM would have run meanwhile, at its pre-copy rate
    migrated: bool
    failure: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "vm": self.vm,
            "migrated": self.migrated,
            "failure": self.failure,
            "rounds": [vars(r) for r in self.rounds],
            "pages": sum(r.pages for r in self.rounds),
            "bytes": sum(r.bytes for r in self.rounds),
            "total_seconds": round(self.total_seconds, 4),
            "downtime_seconds": round(self.downtime_seconds, 4),
            "downtime_instructions": self.downtime_instructions,
        }


def migrate(
    vm: Vm,
    destination: Destination,
    run: Callable[[int], None],
    *,
    slice_steps: int = 20_000,
    max_rounds: int = MAX_ROUNDS,
    stop_at: int = STOP_AT,
) -> MigrationReport:
    """Pre-copy `vm` to `destination`; `run(n)` lets the source run its VMs for n guest
    instructions between chunks. On success the caller releases the VM; on failure (the
    report says why) the VM is as it was, and runs on."""
    machine = vm.machine
    started = time.perf_counter()
    rounds: list[Round] = []
    ran_from, ran_seconds = vm.step, 0.0
    sent: dict[int, int] = {}  # page -> CRC-32 of its contents as last sent
    machine.start_dirty_log()
    try:
        destination.open(vmfile.to_bytes(capture(vm, with_ram=False)))
        zero = bytes(PAGE)
        pending = [p for p in range(0, machine.ram_size, PAGE) if machine.read(p, PAGE) != zero]
        for number in range(max_rounds + 1):
            began = time.perf_counter()
            size = 0
            for at in range(0, len(pending), CHUNK_PAGES):
                size += _send(destination, machine, number, pending[at : at + CHUNK_PAGES], sent)
                tick = time.perf_counter()
                if vm.exit is None or not vm.exit.final:
                    run(slice_steps)
                ran_seconds += time.perf_counter() - tick
            rounds.append(Round(number, len(pending), size, time.perf_counter() - began))
            dirty = machine.take_dirty()
            if len(dirty) <= stop_at or (number and len(dirty) >= len(pending)):
                pending = dirty
                break
            pending = dirty
        stopped = time.perf_counter()
        final = sorted(set(pending).union(machine.take_dirty()))
        size = _send(destination, machine, len(rounds), final, sent)
        digest = destination.commit(vmfile.to_bytes(capture(vm, with_ram=False)))
        if digest != page_digest(sent):
            raise MigrationFailed("the destination's RAM differs from the source's")
        destination.go()
        downtime = time.perf_counter() - stopped
        rounds.append(Round(len(rounds), len(final), size, downtime))
    except (MigrationFailed, OSError, ValueError) as err:
        _abort(destination)
        return MigrationReport(
            vm.name, tuple(rounds), time.perf_counter() - started, 0.0, 0, False, str(err)
        )
    finally:
        machine.stop_dirty_log()
    rate = (vm.step - ran_from) / ran_seconds if ran_seconds else 0.0
    total = time.perf_counter() - started
    return MigrationReport(vm.name, tuple(rounds), total, downtime, round(rate * downtime), True)


def page_digest(crcs: dict[int, int]) -> str:
    """What both ends compare before the VM may start: the CRC-32 of every page each holds
    (sent, received), by page — the pages of the last round included. Cheaper than hashing
    all of RAM while the VM is stopped, and as exact given the dirty log."""
    table = b"".join(struct.pack("<II", page // PAGE, crcs[page]) for page in sorted(crcs))
    return hashlib.sha256(table).hexdigest()


def _send(
    destination: Destination, machine: Machine, number: int, pages: list[int], crcs: dict[int, int]
) -> int:
    if not pages:
        return 0
    for page in pages:
        crcs[page] = zlib.crc32(machine.read(page, PAGE))
    data = vmfile.encode_runs(machine.read, pages)
    destination.pages(number, data)
    return len(data)


def _abort(destination: Destination) -> None:
    with suppress(OSError, ValueError, MigrationFailed):  # gone: nothing to tell it
        destination.abort()


class Receiver:
    """The destination's side: the VM prepared from the state at `open` (its RAM cleared),
    the pages written into its RAM as they come, the final state applied at `commit`,
    started on `go`. `host` and `events` put the VM on the destination's host; `max_ram`
    bounds what a sender may ask for."""

    def __init__(
        self, max_ram: int, host: RamPool | None = None, events: EventLog | None = None
    ) -> None:
        self.max_ram = max_ram
        self.host, self.events = host, events
        self.vm: Vm | None = None
        self.received: dict[int, int] = {}  # page -> CRC-32, as page_digest wants
        self.committed = False
        self.started = False

    def open(self, state: bytes, name: str | None = None) -> None:
        """`name`: what the VM is called here (the destination's host may have one by its
        own name already)."""
        if self.vm is not None:
            raise MigrationFailed("a second open")
        suspended = vmfile.from_bytes(state, "the migrating VM")
        if suspended.ram_size > self.max_ram:
            raise MigrationFailed(f"no room for {suspended.ram_size:,} bytes of RAM here")
        self.vm = prepare(suspended, name=name, host=self.host, events=self.events)
        self.vm.machine.write(0, bytes(suspended.ram_size))  # only the pages sent are not 0

    def pages(self, number: int, data: bytes) -> None:
        if self.vm is None or self.committed:
            raise MigrationFailed("pages before the migration was opened, or after its commit")
        machine = self.vm.machine

        def write(address: int, contents: bytes) -> None:
            machine.write(address, contents)
            for offset in range(0, len(contents), PAGE):
                self.received[address + offset] = zlib.crc32(contents[offset : offset + PAGE])

        vmfile.decode_runs(data, machine.ram_size, write, "pages")

    def progress(self) -> dict[str, int]:
        """Pages in so far, of the VM's RAM (for a view of the migration)."""
        ram = self.vm.machine.ram_size // PAGE if self.vm is not None else 0
        return {"pages": len(self.received), "ram_pages": ram}

    def commit(self, state: bytes) -> str:
        if self.vm is None or self.committed:
            raise MigrationFailed("a commit before the migration was opened, or a second one")
        suspended = vmfile.from_bytes(state, "the migrated state")
        if suspended.ram_size != self.vm.machine.ram_size or suspended.image != self.vm.image:
            raise MigrationFailed("the committed state is not the VM that was opened")
        apply(self.vm, suspended)
        self.committed = True
        return page_digest(self.received)

    def go(self) -> None:
        if not self.committed:
            raise MigrationFailed("go before the commit")
        self.started = True

    def abort(self) -> None:
        if self.vm is not None and not self.started:
            self.vm.machine.release()
        self.vm, self.committed = None, False
