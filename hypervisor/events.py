"""Typed, immutable events: what the engine did, for the CLI, tests, recordings and the UI.

Every event names its VM and the step (the VM's count of retired guest instructions when it
happened), so a stream of several VMs interleaves without ambiguity and replays are exact.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from hypervisor.isa import Instruction


class InsnClass(StrEnum):
    """How one guest instruction was executed (docs/design.md, "Modes")."""

    NATIVE = "native"  # bare metal, no monitor
    DIRECT = "direct"  # ran on the CPU under a monitor, the monitor did not see it
    TRAPPED = "trapped"  # faulted (or was intercepted) and the monitor emulated it
    TRANSLATED = "translated"  # ran as translated code from the translation cache
    HYPERCALL = "hypercall"  # a paravirtual call into the monitor


class EventKind(StrEnum):
    """What the UI filters on and jumps between, and a lesson's `next KIND` names: the kind
    of each event type, and three kinds that are no event of the engine's."""

    TRAP = "trap"
    INTERRUPT = "interrupt"
    IO = "io"
    CONSOLE = "console"
    ISOLATION = "isolation"
    STATE = "state"
    SWITCH = "switch"  # a world switch, on the host's clock
    TRANSLATION = "translation"
    CHAIN = "chain"
    INVALIDATION = "invalidation"
    FLUSH = "flush"
    CALLOUT = "callout"
    INPUT = "input"  # keys typed or bytes sent to COM1, at the step they arrived
    ADAPTIVE = "adaptiveretranslation"
    HYPERCALL = "hypercall"
    PAGE_FAULT = "pagefault"
    HOLE = "hole"  # a sensitive instruction that ran directly and diverged (a recording's)
    NOTE = "note"  # an instructor's annotation (a recording's)


@dataclass(frozen=True, slots=True)
class Event:
    KIND: ClassVar[EventKind]
    vm: str
    step: int


@dataclass(frozen=True, slots=True)
class InstructionExecuted(Event):
    eip: int
    text: str
    cls: InsnClass
    cpl: int  # the guest's own (virtual) privilege level
    hole: bool = False  # sensitive, ran directly, and gave a different answer than bare metal
    sensitive: bool = False  # in the ISA's sensitive tables (privileged, IOPL or unprivileged)
    subkind: str = ""


@dataclass(frozen=True, slots=True)
class Trap(Event):
    """The CPU faulted in the guest and the monitor took control."""

    KIND = EventKind.TRAP
    vector: int
    eip: int
    text: str  # the faulting instruction
    outcome: str  # emulated / reflected / unsupported / halted
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PageFaultHandled(Event):
    """A page fault under shadow paging: "hidden" (the shadow lacked the entry: the monitor
    filled it, the guest never knew), "true" (reflected to the guest with its CR2), or
    "ptemod" (a write to a traced guest page-table page: the shadow entries derived from it
    dropped, the write let through). Under pv's direct paging every fault is "true", or
    "pinned": a direct write to a pinned page table, refused by its read-only mapping and
    reflected as the guest's #PF (changes go through mmu_update)."""

    KIND = EventKind.PAGE_FAULT
    eip: int
    address: int  # CR2
    error_code: int  # the guest's (true), else 0
    outcome: str


@dataclass(frozen=True, slots=True)
class PortAccess(Event):
    KIND = EventKind.IO
    port: int
    size: int
    value: int
    write: bool
    device: str  # owning device, or "" for an unassigned port
    trapped: bool  # intercepted by a monitor (False on bare metal)
    eip: int = 0  # the guest instruction that made the access
    text: str = ""


@dataclass(frozen=True, slots=True)
class InterruptDelivered(Event):
    """An interrupt or exception handed to the guest's handler (through its real or virtual
    IDT)."""

    KIND = EventKind.INTERRUPT
    vector: int
    source: str  # external / exception / software
    from_eip: int
    handler: int
    irq: int | None = None


@dataclass(frozen=True, slots=True)
class ConsoleOutput(Event):
    KIND = EventKind.CONSOLE
    text: str


@dataclass(frozen=True, slots=True)
class InputDelivered(Event):
    """Input from outside reached the guest at this step: keys typed (`keyboard`) or bytes
    received on COM1 (`serial`). A replay delivers it again at the same step."""

    KIND = EventKind.INPUT
    device: str
    text: str


@dataclass(frozen=True, slots=True)
class VmStateChanged(Event):
    KIND = EventKind.STATE
    state: str  # created / running / paused / halted / exited / crashed / ...
    reason: str = ""


@dataclass(frozen=True, slots=True)
class IsolationViolation(Event):
    """A guest touched something outside what it owns; the access was contained."""

    KIND = EventKind.ISOLATION
    kind: str  # open_bus_read/_write, monitor_read/_write, foreign_port, descriptor,
    # page_table (pv: a page-table update or directory refused)
    address: int  # the memory address, the port, or the base a descriptor points at
    eip: int
    detail: str = ""
    text: str = ""  # the instruction at `eip`


@dataclass(frozen=True, slots=True)
class WorldSwitch(Event):
    """The host's CPU leaves one VM and enters another (`vm`, at its `step`)."""

    KIND = EventKind.SWITCH
    previous: str  # the VM that ran before ("" for the first switch)
    reason: str  # why the previous VM left the CPU: quantum / exited / halted / crashed / ...
    host_step: int  # guest instructions the host's CPU has run for all VMs so far


Listener = Callable[[Event], None]


class InstructionSink(Protocol):
    """Takes a traced run's instructions as they retire, instead of `InstructionExecuted`
    events: one object per instruction is what a recording of millions cannot afford (in
    memory, and ~1 µs each to make and fan out). `insn` is the decoder's shared value (None
    where the bytes do not decode)."""

    def __call__(
        self, step: int, eip: int, insn: Instruction | None, cls: InsnClass, cpl: int, hole: bool
    ) -> None: ...


class EventLog:
    """Fan-out of events to listeners, keeping the most recent ones for a quick look. With
    an `instructions` sink, a traced run's instructions go to it and are not events."""

    def __init__(self, keep: int = 10_000) -> None:
        self.recent: deque[Event] = deque(maxlen=keep)
        self._listeners: list[Listener] = []
        self.instructions: InstructionSink | None = None
        # Called at each traced instruction's hook, before it runs, with its step and the
        # registers then (`Machine.trace_registers`: a recorder keeps them); both are read
        # once for the tracer and the recorder.
        self.watch: Callable[[int, bytes], None] | None = None

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def emit(self, event: Event) -> None:
        self.recent.append(event)
        for listener in self._listeners:
            listener(event)


@dataclass(frozen=True, slots=True)
class FragmentTranslated(Event):
    """Binary translation: a guest block became a fragment in the translation cache."""

    KIND = EventKind.TRANSLATION
    fragment: int
    guest_start: int
    guest_end: int
    tc_start: int
    tc_end: int
    instructions: int


@dataclass(frozen=True, slots=True)
class FragmentChained(Event):
    """An exit of one fragment now jumps straight into another: no more monitor round trip."""

    KIND = EventKind.CHAIN
    source: int
    target: int


@dataclass(frozen=True, slots=True)
class FragmentInvalidated(Event):
    """The guest wrote to a page holding translated code: its fragments are gone."""

    KIND = EventKind.INVALIDATION
    fragment: int
    guest_start: int
    written: int  # the guest address whose store caused it


@dataclass(frozen=True, slots=True)
class TranslationCacheFlushed(Event):
    """The translation cache was full: every fragment was dropped."""

    KIND = EventKind.FLUSH


@dataclass(frozen=True, slots=True)
class Callout(Event):
    """Translated code called the monitor to emulate an instruction (no trap involved)."""

    KIND = EventKind.CALLOUT
    eip: int
    text: str


@dataclass(frozen=True, slots=True)
class AdaptiveRetranslation(Event):
    """Adaptive BT: a store kept faulting on a write-protected code page although it only
    wrote data there, so it was retranslated to stop faulting: redirected through a writable
    alias of the page ("alias"), or the page's fragments now check their own bytes
    ("self-check"); after a while a self-checking page is write-protected again and its
    fragments retranslated without checks ("traced")."""

    KIND = EventKind.ADAPTIVE
    page: int
    faults: int
    written: int  # the data address of the last faulting store
    store_eip: int | None  # the guest store retranslated (alias)
    how: str


@dataclass(frozen=True, slots=True)
class Hypercall(Event):
    """A paravirtualized guest kernel called the monitor (`int 0x82`)."""

    KIND = EventKind.HYPERCALL
    eip: int
    number: int
    name: str  # "unknown" for a number the table does not have
    args: tuple[int, ...]
    result: int | None  # what the guest got in EAX (negative: an error code); None: no return
    error: str = ""  # why the call was refused
