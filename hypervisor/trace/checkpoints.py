"""Checkpoints: a whole VM's state at one step, kept compactly, restored into a twin VM.

A VM's state is the machine's (`Machine.snapshot`: CPU context, RAM, monitor memory, page
protections and aliases) plus the plain data of its Python objects: the Vm's counters, stats
and console, the devices (UART, PIC, PIT, debug exit, keyboard controller, VGA) and the
executor's state (the vCPU, the shadow GDT, the translation cache's fragments and links…).
Each stateful class declares which of its attributes are state (`CHECKPOINTED`) and which
stay the receiving VM's own (`NOT_CHECKPOINTED`: its parts, configuration, caches); a test
checks that every attribute is one or the other, so new state is declared where it is born
rather than found missing as a replay divergence far away. The declared values are
deep-copied, the VM's parts they refer to kept as names, so a checkpoint taken from one VM
can be restored into another VM of the same image and mode.

RAM and monitor memory are kept as pages that changed since the previous checkpoint (a
4 MiB guest typically writes a few pages between two checkpoints), all-zero pages shared.
Checkpoints are placed by time: one is due when the VMs ran `every` seconds past the last
one (or ten times what the last one took to take, for a guest with hundreds of MiB of RAM to
diff), so a seek re-executes at most that long whatever the guest does (a million plain
instructions or a few thousand traps) — or, for tests, every `interval` steps. A store has a
memory budget: past it, every other checkpoint goes (its pages merged into the next one)
and the spacing doubles.
"""

from __future__ import annotations

import io
import pickle
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any

from unicorn.unicorn import UcContext

from hypervisor.machine.hostram import PAGE
from hypervisor.machine.machine import MachineSnapshot
from hypervisor.machine.pagediff import ZERO_PAGE, PageDiff, write_changed
from hypervisor.vmm.vm import Vm

DEFAULT_EVERY = 0.05  # seconds of running between two checkpoints
STRIDE = 512  # steps run between two looks at the clock
DEFAULT_BUDGET = 64 << 20  # bytes of checkpoints per VM
_DEVICES = (  # the VM's devices, each checkpointed by what it declares
    *("uart", "pic", "pit", "debug_exit", "isa_debug_exit", "platform"),
    *("kbc", "vga", "rtc", "fw_cfg", "pci", "port61", "port92", "lapic", "ioapic"),
)
_STATEFUL = ("vm", "executor", *_DEVICES)


_WIRING = ("machine", "uc", "events", "image", "host", "ram", "io", "counter", "inputs")
_PART_NAMES = (*_STATEFUL, *_WIRING)


def _parts(vm: Vm) -> dict[str, Any]:
    m = vm.machine
    devices = tuple(getattr(vm, name) for name in _DEVICES)
    wiring = (m, m.uc, vm.events, vm.image, m.host, m.ram, m.io, m.counter, vm.inputs)
    return dict(zip(_PART_NAMES, (vm, vm.executor, *devices, *wiring), strict=True))


def declared(obj: object, which: str = "CHECKPOINTED") -> tuple[str, ...]:
    """The attributes an object's classes declare (`CHECKPOINTED` or `NOT_CHECKPOINTED`),
    each class its own."""
    return tuple(a for cls in type(obj).__mro__ for a in vars(cls).get(which, ()))


def capture_state(vm: Vm) -> State:
    """The declared state of the VM's stateful objects, pickled, its parts referred to by
    name and its values (frozen dataclasses: decoded instructions, translations…) by
    reference."""
    parts = _parts(vm)
    names = {id(obj): name for name, obj in parts.items()}
    state = {
        name: {a: getattr(parts[name], a) for a in declared(parts[name])} for name in _STATEFUL
    }
    buffer = io.BytesIO()
    pickler = _StatePickler(buffer, names)
    pickler.dump(state)
    return State(buffer.getvalue(), tuple(pickler.values))


class _StatePickler(pickle.Pickler):
    """Pickles a VM's state with its parts as names and its values by reference. A
    `reducer_override` rather than a `persistent_id`: the pickler calls it only for objects
    of classes (not for each int, str, list or dict), which makes a checkpoint of a
    translation cache several times faster to take."""

    def __init__(self, file: io.BytesIO, names: dict[int, str]) -> None:
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.names = names
        self.values: list[object] = []

    def reducer_override(self, obj: object) -> Any:  # a reduce tuple, or NotImplemented
        name = self.names.get(id(obj))
        if name is not None:
            return _part, (name,)
        if _is_value(obj):  # the pickler's memo shares it within this state
            self.values.append(obj)
            return _value, (len(self.values) - 1,)
        return NotImplemented


class _StateUnpickler(pickle.Unpickler):
    """Unpickles a state into one VM: the names of parts become that VM's own parts, the
    references to values the values kept beside the state."""

    def __init__(self, state: State, parts: dict[str, Any]) -> None:
        super().__init__(io.BytesIO(state.data))
        self.parts, self.values = parts, state.values

    def find_class(self, module: str, name: str) -> Any:
        if module == __name__ and name == "_part":
            return self.parts.__getitem__
        if module == __name__ and name == "_value":
            return self.values.__getitem__
        return super().find_class(module, name)


def _part(_name: str) -> Any:
    """A part of the VM, by name, in a pickled state (`_StateUnpickler` resolves it)."""
    raise AssertionError("resolved by _StateUnpickler")


def _value(_index: int) -> object:
    """A value kept beside a pickled state (`_StateUnpickler` resolves it)."""
    raise AssertionError("resolved by _StateUnpickler")


def apply_state(vm: Vm, state: State) -> None:
    """Give the VM's stateful objects the captured data, its own parts in place of names."""
    parts = _parts(vm)
    fresh = _StateUnpickler(state, parts).load()
    for name in _STATEFUL:
        for attribute, value in fresh[name].items():
            setattr(parts[name], attribute, value)


def _is_value(obj: object) -> bool:
    """Immutable by declaration (a frozen dataclass): shared between checkpoints and VMs,
    never copied — a translation cache holds thousands of decoded instructions."""
    params = getattr(type(obj), "__dataclass_params__", None)
    return params is not None and params.frozen


@dataclass(frozen=True)
class State:
    """`capture_state`: the pickled data, and the values it refers to."""

    data: bytes
    values: tuple[object, ...]

    def nbytes(self) -> int:
        return len(self.data) + 8 * len(self.values)


@dataclass
class Checkpoint:
    step: int
    cpu: UcContext
    state: State
    ram: dict[int, bytes]  # page offset -> contents, pages changed since the previous one
    monitor: dict[int, bytes]  # the same for monitor memory, by address
    protected: frozenset[int]
    aliases: tuple[tuple[int, int], ...]
    window: tuple[bool, int | None]

    def nbytes(self) -> int:
        pages = (*self.ram.values(), *self.monitor.values())
        stored = sum(len(page) for page in pages if page is not ZERO_PAGE)  # (shared)
        return stored + self.state.nbytes() + 6 * 1024  # + unicorn's CPU context (~5.5 KiB)


@dataclass
class CheckpointStore:
    """A VM's checkpoints, in step order, within a memory budget."""

    every: float = DEFAULT_EVERY
    budget: int = DEFAULT_BUDGET
    interval: int | None = None  # steps between checkpoints instead of `every` seconds
    checkpoints: list[Checkpoint] = field(default_factory=list)
    _steps: list[int] = field(default_factory=list)
    _running: float = 0.0  # seconds run past the last checkpoint
    _cost: float = 0.0  # seconds the last checkpoint took to take
    _ram: PageDiff | None = None  # the last checkpoint's RAM and monitor memory, to diff with
    _monitor: dict[int, bytes] = field(default_factory=dict)
    _nbytes: int = 0
    _restored: tuple[Checkpoint, dict[int, bytes], MachineSnapshot] | None = None  # the last

    @property
    def last_step(self) -> int:
        return self._steps[-1] if self._steps else 0

    def stride(self, now: int, target: int) -> int:
        """How far a VM at step `now` should run towards `target` before asking `due`."""
        due = self.last_step + self.interval if self.interval else now + STRIDE
        return (min(target, due) if due > now else target) - now

    def ran(self, began: int, seconds: float) -> None:
        """A VM ran for `seconds` from step `began`: past the last checkpoint, that counts."""
        if began >= self.last_step:
            self._running += seconds

    def due(self, step: int) -> bool:
        if step <= self.last_step:
            return False
        if self.interval:
            return step - self.last_step >= self.interval
        # at least ten times what the last checkpoint took: a big guest's RAM diff (256 MiB
        # compared in tens of milliseconds) costs a fast-forward a tenth of its time at most
        return self._running >= max(self.every, 10 * self._cost)

    def take(self, vm: Vm) -> None:
        """Checkpoint the VM where it stands (between runs), after the last checkpoint."""
        assert not self._steps or vm.step > self._steps[-1], "checkpoints are taken in order"
        began = time.perf_counter()
        machine = vm.machine
        snapshot = machine.snapshot(ram=False)
        if self._ram is None:
            self._ram = PageDiff(machine.ram_size)
        ram = self._ram.changed(machine.ram_address)
        monitor: dict[int, bytes] = {}
        for begin, data in snapshot.monitor:
            for offset in range(0, len(data), PAGE):
                page = data[offset : offset + PAGE]
                if self._monitor.get(begin + offset) != page:
                    monitor[begin + offset] = ZERO_PAGE if page == ZERO_PAGE else page
                    self._monitor[begin + offset] = page
        checkpoint = Checkpoint(
            vm.step,
            snapshot.cpu,
            capture_state(vm),
            ram,
            monitor,
            snapshot.protected,
            snapshot.aliases,
            snapshot.window,
        )
        self.checkpoints.append(checkpoint)
        self._steps.append(vm.step)
        self._running = 0.0
        self._cost = time.perf_counter() - began
        self._nbytes += checkpoint.nbytes()
        # The budget is the checkpoints' own pages: the copy kept to diff against is RAM-sized
        # whatever is thinned (a 128 MiB guest's alone is over the default budget), and with
        # two checkpoints left thinning drops none.
        while self.stored() > self.budget and len(self.checkpoints) > 2:
            self._thin()

    def nearest(self, step: int) -> Checkpoint | None:
        """The last checkpoint at or before `step`."""
        index = bisect_right(self._steps, step) - 1
        return self.checkpoints[index] if index >= 0 else None

    def restore(self, vm: Vm, checkpoint: Checkpoint) -> None:
        """Put `vm` (same image and mode as the checkpointed one) in the checkpoint's state:
        its RAM page by page where it differs (a VM being put back is mostly where it was),
        then the rest of the machine."""
        pages, snapshot = self._snapshot(checkpoint)
        write_changed(vm.machine.ram_address, pages)
        vm.machine.restore(snapshot)
        apply_state(vm, checkpoint.state)

    def _snapshot(self, checkpoint: Checkpoint) -> tuple[dict[int, bytes], MachineSnapshot]:
        """The checkpoint's RAM as every page's contents then, and the rest of its machine
        state (RAM left out: `restore` writes it); the last one is kept, as stepping back one
        step at a time restores the same checkpoint again and again."""
        if self._restored is not None and self._restored[0] is checkpoint:
            return self._restored[1], self._restored[2]
        index = self.checkpoints.index(checkpoint)
        ram: dict[int, bytes] = {}
        monitor: dict[int, bytes] = {}
        for earlier in reversed(self.checkpoints[: index + 1]):
            for source, target in ((earlier.ram, ram), (earlier.monitor, monitor)):
                for address, page in source.items():
                    target.setdefault(address, page)
        snapshot = MachineSnapshot(
            checkpoint.cpu,
            b"",
            _ranges(monitor),
            checkpoint.protected,
            checkpoint.aliases,
            checkpoint.window,
        )
        self._restored = (checkpoint, ram, snapshot)
        return ram, snapshot

    def stored(self) -> int:
        """Bytes of the checkpoints themselves: what the budget bounds."""
        return self._nbytes

    def nbytes(self) -> int:
        """Memory the checkpoints take, with the full copies kept of the last one taken (to
        diff against) and of the last one restored."""
        restored = self._restored[2] if self._restored else None  # (its pages are shared)
        kept = sum(len(d) for _, d in restored.monitor) if restored else 0
        copy = self._ram.nbytes() if self._ram else 0
        return self._nbytes + copy + sum(map(len, self._monitor.values())) + kept

    def __len__(self) -> int:
        return len(self.checkpoints)

    def _thin(self) -> None:
        """Drop every other checkpoint (the first stays: it holds every page) and double
        the interval; a dropped checkpoint's pages go to the next one unless it has its own."""
        kept: list[Checkpoint] = []
        for index, checkpoint in enumerate(self.checkpoints):
            if index % 2 and index + 1 < len(self.checkpoints):
                following = self.checkpoints[index + 1]
                for address, page in checkpoint.ram.items():
                    following.ram.setdefault(address, page)
                for address, page in checkpoint.monitor.items():
                    following.monitor.setdefault(address, page)
            else:
                kept.append(checkpoint)
        self.checkpoints = kept
        self._restored = None
        self._steps = [c.step for c in kept]
        self._nbytes = sum(c.nbytes() for c in kept)
        self.every *= 2
        if self.interval:
            self.interval *= 2


def _ranges(pages: dict[int, bytes]) -> tuple[tuple[int, bytes], ...]:
    """Pages by address joined into runs of consecutive pages (one write each)."""
    runs: list[tuple[int, list[bytes]]] = []
    for address in sorted(pages):
        if runs and runs[-1][0] + PAGE * len(runs[-1][1]) == address:
            runs[-1][1].append(pages[address])
        else:
            runs.append((address, [pages[address]]))
    return tuple((address, b"".join(run)) for address, run in runs)
