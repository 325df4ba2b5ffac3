"""Fault-tolerant pairs, in the manner of VMware FT: a primary VM on one host, a backup on
another that replays the primary's input log in lock-step and goes live when the primary dies.

A run is deterministic given its inputs (hypervisor/vmm/inputs.py), so the log carries only
those: every input the primary delivered, with its step, and every input handed to it that it
has not delivered yet. Between slices the primary's host ships what is new with the step it
has reached (its *horizon*), without waiting; the backup acknowledges each record:

- lock-step: the backup may run up to the horizon and no further (its budget is the horizon);
- output commit: the primary's console is released (to `console` requests) only up to the
  last horizon the backup has acknowledged, so nothing the outside saw can be lost with it;
- takeover: when the log channel closes without an end (the primary's host died), the backup
  runs on from the horizon, deterministically as the primary did, and takes the inputs the
  primary had been given but not yet logged as delivered: no guest-visible loss.
"""

from __future__ import annotations

import json
import select
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hypervisor import schema
from hypervisor.encap.wire import TIMEOUT, send, split
from hypervisor.schema import U64, List, Obj, OneOf, Row, Str
from hypervisor.vmm.contract import ExitReason, VmState
from hypervisor.vmm.host import UNLIMITED, HostedVm
from hypervisor.vmm.inputs import Input, InputDevice
from hypervisor.vmm.vm import Vm

if TYPE_CHECKING:
    from hypervisor.encap.wire import HostClient

SHIP_EVERY = 0.02  # seconds: a record at least this often while the primary runs on

_DEVICE = OneOf(frozenset(InputDevice))
RECORD = Obj(
    {
        "step": U64,
        "delivered": List(Row((U64, _DEVICE, Str(4096))), 4096),
        "waiting": List(Row((_DEVICE, Str(4096))), 4096),
    }
)


def asleep(vm: Vm) -> bool:
    """The guest sleeps and nothing but a new input can wake it (no timer, no interrupt
    pending, no input left): running it would retire nothing, so its host does not."""
    inputs = vm.inputs
    return (
        vm.executor.waiting_for_interrupt
        and vm.timer_due() is None
        and vm.irqs.pending_vector() is None
        and not inputs.waiting
        and inputs.due(vm.inputs_done) is None
    )


def gate(hosted: HostedVm, horizon: int = UNLIMITED) -> None:
    """Let `hosted` run up to `horizon`, but not while it sleeps waiting for input. A VM its
    budget stopped (paused, as a run to a step is) goes on once the budget is raised."""
    vm = hosted.vm
    hosted.budget = vm.step if asleep(vm) else horizon
    stopped = vm.exit is not None and vm.exit.reason is ExitReason.BUDGET
    if stopped and vm.state is VmState.PAUSED and not hosted.held and hosted.budget_left:
        vm.state = VmState.RUNNING


@dataclass
class Primary:
    """The primary's end of the log channel (on the primary's host). Records go out without
    waiting: the primary runs on while the backup takes them, and only what it prints waits
    — for the acknowledgement of the record that covers it (FT's output rule)."""

    hosted: HostedVm
    channel: HostClient | None
    backup: str  # the backup host's address
    shipped: int = 0  # timed inputs logged as delivered
    horizon: int = -1  # the last step the backup acknowledged
    committed: int = 0  # console bytes released: those up to the horizon
    log_bytes: int = 0
    lag: int = 0  # the primary's step minus the backup's, at the last acknowledgement
    started: float = field(default_factory=time.monotonic)
    pending: list[Input] = field(default_factory=list)  # handed over, not yet logged
    outstanding: deque[tuple[int, int]] = field(default_factory=deque)  # (step, console)
    sent: tuple[int, int, float] = (-1, 0, 0.0)  # the last record's step, console, time
    replies: bytearray = field(default_factory=bytearray)

    def give(self, item: Input) -> None:
        """An input from outside: it waits for the guest, and is logged before the sender
        hears it was taken (so a takeover cannot lose it)."""
        self.hosted.vm.inputs.add(item)
        self.pending.append(item)
        self.ship()
        deadline = time.monotonic() + TIMEOUT
        while self.outstanding and self.channel is not None:
            self._acknowledged(max(deadline - time.monotonic(), 0.0))
            if time.monotonic() >= deadline:
                self._lost()

    def ship(self) -> None:
        """Log what is new up to the primary's step, when there is something to release
        (inputs, output) or SHIP_EVERY has passed; take the acknowledgements that came."""
        self._acknowledged(0.0)
        vm = self.hosted.vm
        if self.channel is None:
            self.committed = len(vm.console)
            return
        step, printed, now = vm.step, len(vm.console), time.monotonic()
        delivered = vm.inputs.timed[self.shipped : vm.inputs_done]
        last_step, last_printed, last_time = self.sent
        news = delivered or self.pending or printed != last_printed
        if (step == last_step and not news) or (not news and now - last_time < SHIP_EVERY):
            return
        record = {
            "step": step,
            "delivered": [[i.step, i.device.value, i.text] for i in delivered],
            "waiting": [[i.device.value, i.text] for i in self.pending],
        }
        payload = json.dumps(record).encode()
        try:
            send(self.channel.sock, {"op": "ft_log"}, payload)
        except OSError:
            self._lost()
            return
        self.log_bytes += len(payload)
        self.shipped += len(delivered)
        self.pending.clear()
        self.outstanding.append((step, printed))
        self.sent = (step, printed, now)

    def _acknowledged(self, timeout: float) -> None:
        """Take the backup's acknowledgements that have come (waiting up to `timeout` for
        one): each releases the console up to its record's step."""
        if self.channel is None:
            return
        sock = self.channel.sock
        while select.select([sock], [], [], timeout)[0]:
            timeout = 0.0
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self._lost()
                return
            self.replies += data
            while self.outstanding and (frame := split(self.replies)) is not None:
                reply = schema.decode(frame[0])
                if not reply.get("ok"):
                    self._lost()
                    return
                self.horizon, self.committed = self.outstanding.popleft()
                self.lag = self.hosted.vm.step - int(reply["step"])

    def _lost(self) -> None:
        """The backup is gone: no more fault tolerance, nothing else lost."""
        if self.channel is not None:
            self.channel.close()
        self.channel = None
        self.outstanding.clear()
        self.committed = len(self.hosted.vm.console)

    def status(self) -> dict[str, Any]:
        seconds = max(time.monotonic() - self.started, 1e-9)
        return {
            "role": "primary" if self.channel is not None else "alone",
            "peer": self.backup,
            "log_bytes": self.log_bytes,
            "log_rate": round(self.log_bytes / seconds, 1),
            "lag": self.lag,
        }


@dataclass
class Backup:
    """The backup's end (on the backup's host): a VM held at the primary's horizon."""

    hosted: HostedVm
    waiting: list[Input] = field(default_factory=list)  # given to the primary, not delivered
    horizon: int = 0
    live: bool = False

    def log(self, payload: bytes) -> int:
        """Take one log record; the backup's step (for the primary's lag)."""
        record = json.loads(payload)
        vm = self.hosted.vm
        for step, device, text in record["delivered"]:
            item = Input(InputDevice(device), text, int(step))
            vm.inputs.add(item)
            self._forget(item)
        self.waiting += [Input(InputDevice(d), t) for d, t in record["waiting"]]
        self.horizon = max(self.horizon, int(record["step"]))
        gate(self.hosted, self.horizon)
        return vm.step

    def _forget(self, item: Input) -> None:
        for index, waiting in enumerate(self.waiting):
            if (waiting.device, waiting.text) == (item.device, item.text):
                del self.waiting[index]
                return

    def go_live(self) -> None:
        """The primary is gone: run on from the horizon, with the inputs it had not
        delivered waiting for the guest as they waited for it."""
        self.live = True
        for item in self.waiting:
            self.hosted.vm.inputs.add(item)
        self.waiting.clear()
        gate(self.hosted)

    def status(self) -> dict[str, Any]:
        role = "took over" if self.live else "backup"
        return {"role": role, "peer": "", "log_bytes": 0, "log_rate": 0.0, "lag": 0}


def check_record(payload: bytes) -> None:
    """A log record is checked before it touches the backup (a hostile peer cannot hurt it)."""
    try:
        schema.check(schema.decode(payload), RECORD)
    except schema.SchemaError as err:
        raise ValueError(f"a bad log record: {err}") from None
