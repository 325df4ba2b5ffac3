"""A recording of one VM's run: every executed guest instruction, compactly, and its events.

A traced run emits one `InstructionExecuted` per retired instruction; kept as objects that is
~200 bytes each. A `Recording` keeps them in columns instead, one entry per step (step k is
the instruction that took the VM from k to k+1 retired instructions):

    ids          array('I')   index into `instructions` (eip, bytes, text, sensitive): a loop
                              body costs 4 bytes per execution, not its text
    classes      bytearray    the instruction's class (CLASS_CODES); `count()` on a slice is
                              how the UI counts classes, in C
    cpls         bytearray    the guest's own privilege level
    reg_masks    array('H')   which registers the instruction changed (bit i: REGISTERS[i])
    reg_values   array('I')   their new values, in mask order, all steps concatenated
    mem_*                     sparse columns: one entry per memory write by the CPU

Registers are the real CPU's, as each instruction started (so `registers_at(k).eip` is the
EIP of step k); a full copy every KEYFRAME steps gives random access. Memory writes are the
CPU's own stores; what the monitor writes into guest memory on the guest's behalf (an
interrupt frame, an emulated instruction's store) is not among them. Every other event is
kept as it is (they are rare), minus the running/paused changes that stepping causes, and
console output is kept as whole lines so that the recording of a run does not depend on how
it was stepped.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from dataclasses import astuple, dataclass, field

from unicorn import UC_HOOK_CODE, UC_HOOK_MEM_WRITE, Uc

from hypervisor.events import (
    ConsoleOutput,
    Event,
    EventKind,
    InsnClass,
    InstructionExecuted,
    VmStateChanged,
)
from hypervisor.isa import decode
from hypervisor.machine.cpu import STATE_FIELDS
from hypervisor.vmm.contract import ExitInfo, VmState
from hypervisor.vmm.vm import Vm

REGISTERS = STATE_FIELDS
KEYFRAME = 4096
CLASS_CODES = {cls: code for code, cls in enumerate(InsnClass)}
CLASSES = tuple(InsnClass)
CLASS_BY_NAME = {cls.value: code for cls, code in CLASS_CODES.items()}

_TRANSIENT_STATES = frozenset({VmState.RUNNING, VmState.PAUSED})


def registers_of(vm: Vm) -> tuple[int, ...]:
    """The real CPU's registers in REGISTERS order, as a recording keeps them."""
    return astuple(vm.machine.state())


@dataclass(frozen=True, slots=True)
class InsnInfo:
    """One instruction as it sits in memory (shared by all its executions)."""

    eip: int
    raw: bytes
    text: str
    sensitive: bool


@dataclass(frozen=True, slots=True)
class MemoryWrite:
    address: int
    size: int
    value: int


@dataclass(frozen=True, slots=True)
class StepRecord:
    """Everything recorded about one step, expanded."""

    step: int
    insn: InsnInfo
    cls: InsnClass
    hole: bool
    cpl: int
    changes: dict[str, int]  # register -> new value
    writes: tuple[MemoryWrite, ...]


@dataclass
class Recording:
    """One VM's run, as far as it has been recorded. See the module docstring."""

    guest: str
    mode: str
    image_sha256: str
    ram_size: int
    initial: tuple[int, ...] = ()  # registers at step 0
    instructions: list[InsnInfo] = field(default_factory=list)
    ids: array = field(default_factory=lambda: array("I"))
    classes: bytearray = field(default_factory=bytearray)
    cpls: bytearray = field(default_factory=bytearray)
    reg_masks: array = field(default_factory=lambda: array("H"))
    reg_values: array = field(default_factory=lambda: array("I"))
    mem_steps: array = field(default_factory=lambda: array("I"))
    mem_addresses: array = field(default_factory=lambda: array("I"))
    mem_sizes: bytearray = field(default_factory=bytearray)
    mem_values: array = field(default_factory=lambda: array("Q"))
    events: list[Event] = field(default_factory=list)
    holes: array = field(default_factory=lambda: array("I"))  # steps of hole instructions
    exit: ExitInfo | None = None  # set when the guest stopped for good
    annotations: dict[int, str] = field(default_factory=dict)  # an instructor's notes by step
    # Indexes over the columns, saved with them (small: O(steps / KEYFRAME) and
    # O(addresses)): (reg_values offset, registers) every KEYFRAME steps, the registers
    # after the last step, and per address the steps where its tag (class | 0x80 for a
    # hole) changed.
    keyframes: list[tuple[int, tuple[int, ...]]] = field(default_factory=list, repr=False)
    final: tuple[int, ...] = field(default=(), repr=False)
    history: dict[int, tuple[array, bytearray]] = field(default_factory=dict, repr=False)
    # Lookup indexes, rebuilt on load by `reindex`.
    _insn_index: dict[tuple[int, str], int] = field(default_factory=dict, repr=False)
    _kind_steps: dict[str, array] = field(default_factory=dict, repr=False)
    _event_steps: array = field(default_factory=lambda: array("I"), repr=False)
    # The last `registers_at` answer (step, reg_values offset, registers): the UI asks for
    # neighbouring steps, which then cost a few masks instead of up to KEYFRAME.
    _last_registers: tuple[int, int, tuple[int, ...]] = field(
        default=(-1, 0, ()), repr=False, compare=False
    )

    def __len__(self) -> int:
        """Steps recorded: the VM's own count of retired instructions at the frontier.

        The instruction columns have exactly this length when every instruction event
        carries its step, as under native and trap; a mode whose events and step counts
        disagree (`aligned` False) still gets a consistent timeline, with fewer or more
        instruction entries than steps."""
        return len(self.reg_masks)

    @property
    def aligned(self) -> bool:
        return len(self.ids) == len(self.reg_masks)

    @property
    def finished(self) -> bool:
        return self.exit is not None

    # ------------------------------------------------------------------ appending
    def instruction_id(self, eip: int, text: str) -> int | None:
        """The instruction table's entry for an instruction, if it has one yet."""
        return self._insn_index.get((eip, text))

    def add_instruction(self, eip: int, raw: bytes, text: str, sensitive: bool) -> int:
        self._insn_index[eip, text] = len(self.instructions)
        self.instructions.append(InsnInfo(eip, raw, text, sensitive))
        return len(self.instructions) - 1

    def add_step(self, insn: int, cls: InsnClass, hole: bool, cpl: int) -> None:
        step = len(self.ids)
        self.ids.append(insn)
        self.classes.append(CLASS_CODES[cls])
        self.cpls.append(cpl)
        if hole:
            self.holes.append(step)
        code = CLASS_CODES[cls] | (0x80 if hole else 0)
        history = self.history.get(self.instructions[insn].eip)
        if history is None:
            self.history[self.instructions[insn].eip] = (array("I", [step]), bytearray([code]))
        elif history[1][-1] != code:
            history[0].append(step)
            history[1].append(code)

    def add_registers(self, step: int, before: tuple[int, ...], after: tuple[int, ...]) -> None:
        """Registers changed by step `step` (called in step order, once per step)."""
        if step % KEYFRAME == 0:
            self.keyframes.append((len(self.reg_values), before))
        mask = 0
        for i, (old, new) in enumerate(zip(before, after, strict=True)):
            if old != new:
                mask |= 1 << i
                self.reg_values.append(new)
        self.reg_masks.append(mask)
        self.final = after

    def add_write(self, step: int, address: int, size: int, value: int) -> None:
        self.mem_steps.append(step)
        self.mem_addresses.append(address & 0xFFFFFFFF)
        self.mem_sizes.append(size)
        self.mem_values.append(value & 0xFFFFFFFFFFFFFFFF)

    def add_event(self, event: Event) -> None:
        self.events.append(event)
        self._event_steps.append(event.step)
        self._kind_steps.setdefault(event.KIND, array("I")).append(event.step)

    def reindex(self) -> None:
        """Rebuild the lookup indexes (after loading the columns from a file)."""
        self._insn_index = {(i.eip, i.text): n for n, i in enumerate(self.instructions)}
        events, self.events = self.events, []
        self._kind_steps, self._event_steps = {}, array("I")
        for event in events:
            self.add_event(event)

    # ------------------------------------------------------------------ reading
    def record(self, step: int) -> StepRecord | None:
        """Step `step` expanded, or None if no instruction was traced for it."""
        if step >= len(self.ids):
            return None
        insn = self.instructions[self.ids[step]]
        before = self.registers_at(step)
        after = self.registers_at(step + 1)
        changes = {
            name: new for name, old, new in zip(REGISTERS, before, after, strict=True) if old != new
        }
        first = bisect_left(self.mem_steps, step)
        last = bisect_right(self.mem_steps, step)
        writes = tuple(
            MemoryWrite(self.mem_addresses[i], self.mem_sizes[i], self.mem_values[i])
            for i in range(first, last)
        )
        index = bisect_left(self.holes, step)
        hole = index < len(self.holes) and self.holes[index] == step
        cls = CLASSES[self.classes[step]]
        return StepRecord(step, insn, cls, hole, self.cpls[step], changes, writes)

    def registers_at(self, step: int) -> tuple[int, ...]:
        """The real CPU's registers when step `step` began (0 ≤ step ≤ len)."""
        if not 0 <= step <= len(self):
            raise IndexError(step)
        if step == len(self) and self.final:
            return self.final
        if not self.keyframes:
            return self.initial
        start = step - step % KEYFRAME
        cached, offset, values = self._last_registers
        if not start <= cached <= step:  # walk from the keyframe, else from the last answer
            cached, (offset, values) = start, self.keyframes[step // KEYFRAME]
        walked = list(values)
        for mask in self.reg_masks[cached:step]:
            for i in range(len(REGISTERS)):
                if mask >> i & 1:
                    walked[i] = self.reg_values[offset]
                    offset += 1
        self._last_registers = (step, offset, tuple(walked))
        return self._last_registers[2]

    def class_counts(self, stop: int, start: int = 0) -> dict[str, int]:
        """Instructions by class in steps [start, stop)."""
        return {name: self.classes.count(code, start, stop) for name, code in CLASS_BY_NAME.items()}

    def tag(self, eip: int, before: int) -> tuple[InsnClass, bool] | None:
        """How the instruction at `eip` ran the last time before step `before`, if it ran."""
        history = self.history.get(eip)
        if history is None:
            return None
        index = bisect_left(history[0], before) - 1
        if index < 0:
            return None
        code = history[1][index]
        return CLASSES[code & 0x7F], bool(code & 0x80)

    def events_before(self, stop: int, limit: int) -> list[Event]:
        """The last `limit` events with step < stop, in order."""
        end = bisect_left(self._event_steps, stop)
        return self.events[max(0, end - limit) : end]

    def count(self, kind: str, stop: int) -> int:
        """Events of `kind` with step < stop."""
        return bisect_left(self._kind_steps.get(kind, array("I")), stop)

    def event_kinds(self) -> list[str]:
        """The kinds of the events recorded so far (`next_step` also knows the instruction
        classes and holes, from the columns)."""
        return sorted(self._kind_steps)

    def next_step(self, kind: str, after: int) -> int | None:
        """The first step > `after` at which something of `kind` had just happened (for an
        instruction kind, the step right after that instruction ran), in the recording."""
        if kind in CLASS_BY_NAME:
            found = self.classes.find(CLASS_BY_NAME[kind], max(after, 0))
            return found + 1 if 0 <= found < len(self) else None
        steps, shift = self._steps_of(kind)
        index = bisect_right(steps, after - shift)
        return steps[index] + shift if index < len(steps) else None

    def previous_step(self, kind: str, before: int) -> int | None:
        """The last step < `before` of the same kind (see `next_step`)."""
        if kind in CLASS_BY_NAME:
            found = self.classes.rfind(CLASS_BY_NAME[kind], 0, max(before - 1, 0))
            return found + 1 if found >= 0 else None
        steps, shift = self._steps_of(kind)
        index = bisect_left(steps, before - shift) - 1
        return steps[index] + shift if index >= 0 else None

    def _steps_of(self, kind: str) -> tuple[array, int]:
        if kind == EventKind.HOLE:
            return self.holes, 1
        return self._kind_steps.get(kind, array("I")), 0

    def nbytes(self) -> int:
        """Memory taken by the per-step columns and the instruction table (the events and
        annotations are counted by the trace file's size)."""
        columns = (self.ids, self.reg_masks, self.reg_values, self.mem_steps)
        sized = sum(c.itemsize * len(c) for c in columns)
        sized += len(self.classes) + len(self.cpls) + len(self.mem_sizes)
        sized += 4 * len(self.mem_addresses) + 8 * len(self.mem_values)
        return sized + sum(16 + len(i.raw) + len(i.text) for i in self.instructions)


class Recorder:
    """Records a VM's traced runs into a `Recording`.

    It listens to the VM's events and adds two CPU hooks of its own while the VM runs: one
    per instruction (the registers) and one per memory write. Register state is taken at the
    *last* time the code hook fires for a step: a step can be announced, then preceded by
    the monitor's work (a world switch, an interrupt delivery) before it really runs.
    """

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self._registers = vm.machine.registers
        self._state = self._registers.read()
        self._at = vm.step  # the step whose registers `_state` holds
        self.recording = Recording(
            vm.image.name, vm.mode, vm.image.sha256, vm.machine.ram_size, initial=self._state
        )
        self._console = ""
        vm.events.subscribe(self._on_event)

    def run(self, count: int) -> ExitInfo:
        """Run the VM traced for up to `count` instructions, recording them."""
        uc = self.vm.machine.uc
        hooks = (
            uc.hook_add(UC_HOOK_CODE, self._on_code),
            uc.hook_add(UC_HOOK_MEM_WRITE, self._on_write),
        )
        try:
            exit_info = self.vm.run(count, trace=True)
        finally:
            for hook in hooks:
                uc.hook_del(hook)
        self._advance(self.vm.step)
        if exit_info.final:
            self._flush_console()
            self.recording.exit = exit_info
        return exit_info

    # ------------------------------------------------------------------ hooks
    def _on_code(self, uc: Uc, address: int, size: int, _: object) -> None:
        self._advance(self.vm.step - 1)

    def _advance(self, step: int) -> None:
        state = self._registers.read()
        if step > self._at:
            self.recording.add_registers(self._at, self._state, state)
            for skipped in range(self._at + 1, step):  # a count that jumped: nothing to say
                self.recording.add_registers(skipped, state, state)
            self._at = step
        self._state = state

    def _on_write(
        self, uc: Uc, access: int, address: int, size: int, value: int, _: object
    ) -> None:
        self.recording.add_write(self._at, address, size, value)

    def _on_event(self, event: Event) -> None:
        recording = self.recording
        if isinstance(event, InstructionExecuted):
            insn = recording.instruction_id(event.eip, event.text)
            if insn is None:
                decoded = decode(self.vm.machine.read(event.eip, 15), event.eip)
                raw = decoded.bytes if decoded else b""
                insn = recording.add_instruction(event.eip, raw, event.text, event.sensitive)
            recording.add_step(insn, event.cls, event.hole, event.cpl)
        elif isinstance(event, ConsoleOutput):
            self._console += event.text
            while "\n" in self._console:
                line, self._console = self._console.split("\n", 1)
                recording.add_event(ConsoleOutput(event.vm, event.step, line + "\n"))
        elif not (isinstance(event, VmStateChanged) and event.state in _TRANSIENT_STATES):
            recording.add_event(event)

    def _flush_console(self) -> None:
        if self._console:
            self.recording.add_event(ConsoleOutput(self.vm.name, self.vm.step, self._console))
            self._console = ""
