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
CPU's own stores into the guest's memory, at the linear address the instruction names (with
paging on, the recorder maps unicorn's physical one back); what the monitor writes into guest
memory on the guest's behalf (an interrupt frame, an emulated instruction's store) or into its
own pages is not among them. Every other event is
kept as it is (they are rare), minus the running/paused changes that stepping causes, and
console output is kept as whole lines so that the recording of a run does not depend on how
it was stepped.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import astuple, dataclass, field
from itertools import compress

from hypervisor.events import (
    Event,
    EventKind,
    InsnClass,
    InstructionExecuted,
    InstructionSink,
)
from hypervisor.isa import Instruction
from hypervisor.machine.cpu import STATE_FIELDS
from hypervisor.trace.skips import Skip, Skips
from hypervisor.vmm.contract import ExitInfo, Mode
from hypervisor.vmm.vm import Vm

REGISTERS = STATE_FIELDS
KEYFRAME = 4096  # columns between two full copies of the registers
CLASS_CODES = {cls: code for code, cls in enumerate(InsnClass)}
CLASSES = tuple(InsnClass)
CLASS_BY_NAME = {cls.value: code for cls, code in CLASS_CODES.items()}
WORDS = 4 * len(REGISTERS)  # bytes of a raw register read (RegisterReader.raw)
unpack_registers = struct.Struct(f"={len(REGISTERS)}I").unpack
_LOW_WORD = (1).to_bytes(4, "little")


def registers_of(vm: Vm) -> tuple[int, ...]:
    """The real CPU's registers in REGISTERS order, as a recording keeps them."""
    return astuple(vm.machine.state())


_EIP = REGISTERS.index("eip")


def same_run(mode: str, registers: tuple[int, ...]) -> tuple[int, ...]:
    """The registers two runs of one guest to one step must agree on. Under bt the real EIP
    is an address in the translation cache, a cache whose layout depends on how the run was
    sliced (a traced run, a run approached by stepping fragments, a seek): not the guest's
    state, so left out; every other register, EFLAGS and EAX included, must match."""
    if mode == Mode.BT:
        return registers[:_EIP] + registers[_EIP + 1 :]
    return registers


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
    skips: Skips = field(default_factory=Skips, repr=False)  # fast-forwarded stretches
    # Lookup indexes, rebuilt on load by `reindex`.
    _insn_index: dict[tuple[int, str], int] = field(default_factory=dict, repr=False)
    _by_insn: dict[int, int] = field(default_factory=dict, repr=False)  # id(value) -> entry
    _decoded: list[Instruction] = field(default_factory=list, repr=False)
    _kind_steps: dict[str, array] = field(default_factory=dict, repr=False)
    _event_steps: array = field(default_factory=lambda: array("I"), repr=False)
    # The last `registers_at` answer (step, column, reg_values offset, registers): the UI
    # asks for neighbouring steps, which then cost a few masks instead of up to KEYFRAME.
    _last_registers: tuple[int, int, int, tuple[int, ...]] = field(
        default=(-1, 0, 0, ()), repr=False, compare=False
    )

    def __len__(self) -> int:
        """Steps recorded: the VM's own count of retired instructions at the frontier.

        The instruction columns have exactly this length when every instruction event
        carries its step, as under native and trap; a mode whose events and step counts
        disagree (`aligned` False) still gets a consistent timeline, with fewer or more
        instruction entries than steps. Fast-forwarded steps count, without columns."""
        return len(self.reg_masks) + self.skips.skipped

    @property
    def traced_end(self) -> int:
        """The step after the last traced one (0 if none)."""
        columns = len(self.reg_masks)
        return self.skips.step(columns - 1) + 1 if columns else 0

    @property
    def aligned(self) -> bool:
        return len(self.ids) == len(self.reg_masks)

    @property
    def finished(self) -> bool:
        return self.exit is not None

    # ------------------------------------------------------------------ appending
    def sink(self) -> InstructionSink:
        """The `InstructionSink` of a recorded VM: each instruction retired is appended as
        step `len(ids)` (whatever step the executor counted). A closure over the columns'
        bound methods: it runs at every traced instruction, where each attribute lookup
        more counts. (Columns are appended to in place while a recording is made.)"""
        by_insn, intern = self._by_insn.get, self._intern
        ids, history, skips = self.ids, self.history, self.skips
        append_id, append_class, append_cpl = ids.append, self.classes.append, self.cpls.append
        history_of, codes = history.get, CLASS_CODES

        def add(
            step: int, eip: int, insn: Instruction | None, cls: InsnClass, cpl: int, hole: bool
        ) -> None:
            index = by_insn(id(insn)) if insn is not None else None
            append_id(intern(eip, insn) if index is None else index)
            code = codes[cls]
            append_class(code)
            append_cpl(cpl)
            if hole:
                code |= 0x80
                self.holes.append(len(ids) - 1 + skips.skipped)
            tags = history_of(eip)
            if tags is None:
                history[eip] = (array("I", [len(ids) - 1 + skips.skipped]), bytearray([code]))
            elif tags[1][-1] != code:
                tags[0].append(len(ids) - 1 + skips.skipped)
                tags[1].append(code)

        return add

    def _intern(self, eip: int, insn: Instruction | None) -> int:
        """The table's entry for a decoded instruction, made on first sight. The decoder
        shares one value per bytes and address, so later executions find it by identity
        (kept alive here, so that no other value takes its id)."""
        text = insn.text if insn is not None else "(bad)"
        index = self._insn_index.get((eip, text))
        if index is None:
            raw, sensitive = (insn.bytes, insn.is_sensitive) if insn is not None else (b"", False)
            index = self._insn_index[eip, text] = len(self.instructions)
            self.instructions.append(InsnInfo(eip, raw, text, sensitive))
        if insn is not None:
            self._by_insn[id(insn)] = index
            self._decoded.append(insn)
        return index

    def add_states(self, states: bytes | bytearray) -> None:
        """Registers of the next traced steps, from the raw register reads
        (`RegisterReader.raw`, WORDS bytes each) at the start of each of n steps and after
        the last: n + 1 reads, the diffs of n steps. Done in bulk with big-integer
        arithmetic (the changed words of every step at once, then their values picked with
        `compress`): a recorder only appends each read, instead of diffing it in Python."""
        n = len(states) // WORDS - 1
        if n <= 0:
            return
        first, words = len(self.reg_masks), WORDS // 4
        x = int.from_bytes(states[WORDS:], "little") ^ int.from_bytes(states[:-WORDS], "little")
        x |= x >> 16  # fold each 32-bit word onto its lowest bit
        x |= x >> 8
        x |= x >> 4
        x |= x >> 2
        x |= x >> 1
        flags = (x & int.from_bytes(_LOW_WORD * (words * n), "little")).to_bytes(
            WORDS * n, "little"
        )
        per_word = flags[::4]  # one byte per register per step: 1 where it changed
        offset = len(self.reg_values)
        with memoryview(flags) as f, memoryview(states)[WORDS:] as after:
            self.reg_values.extend(compress(after.cast("I"), f.cast("I")))
        masks = bytearray(2 * n)  # little-endian 16-bit masks: low and high bytes in bulk
        for half in (0, 1):
            bits = sum(
                int.from_bytes(per_word[8 * half + b :: words], "little") << b for b in range(8)
            )
            masks[half::2] = bits.to_bytes(n, "little")
        column = array("H", masks)
        if sys.byteorder == "big":
            column.byteswap()
        self.reg_masks.extend(column)
        for step in range(-(-first // KEYFRAME) * KEYFRAME, first + n, KEYFRAME):
            at = (step - first) * WORDS
            changed = per_word.count(1, 0, (step - first) * words)
            self.keyframes.append((offset + changed, unpack_registers(states[at : at + WORDS])))

    def add_skip(self, end: int, counts: dict[str, int], after: tuple[int, ...]) -> None:
        """The VM ran untraced from the frontier to step `end` (see `skips.py`)."""
        start = len(self)
        if end > start:
            column, offset = len(self.reg_masks), len(self.reg_values)
            self.skips.add(Skip(start, end, column, offset, tuple(counts.items()), after))
            self.final = after

    def drop_skips(self, start: int, registers: tuple[int, ...]) -> None:
        """Forget the fast-forwarded stretches from step `start` on, where the run is now
        again (with these registers): it will be recorded anew."""
        while self.skips.items and self.skips.items[-1].start >= start:
            self.skips.drop_last()
        assert len(self) == start, "a recording is cut back only where a stretch began"
        self.final = registers

    def add_write(self, step: int, address: int, size: int, value: int) -> None:
        self.mem_steps.append(step)
        self.mem_addresses.append(address & 0xFFFFFFFF)
        self.mem_sizes.append(size)
        self.mem_values.append(value & 0xFFFFFFFFFFFFFFFF)

    def add_event(self, event: Event) -> None:
        self.events.append(event)
        self._event_steps.append(event.step)
        self._kind_steps.setdefault(event.KIND, array("I")).append(event.step)

    def truncate_events(self, count: int) -> None:
        """Keep the first `count` events only."""
        for event in self.events[count:]:
            self._kind_steps[event.KIND].pop()
        del self.events[count:]
        del self._event_steps[count:]

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
        column = self.skips.column(step)
        if column is None or column >= len(self.ids):
            return None
        insn = self.instructions[self.ids[column]]
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
        cls = CLASSES[self.classes[column]]
        return StepRecord(step, insn, cls, hole, self.cpls[column], changes, writes)

    def instruction_at(self, step: int) -> InsnInfo | None:
        """The instruction traced at `step`, if it was traced."""
        column = self.skips.column(step)
        if column is None or column >= len(self.ids):
            return None
        return self.instructions[self.ids[column]]

    def executed_events(self, vm: str) -> Iterator[InstructionExecuted]:
        """The instruction columns as the events a run without a recording emits (in step
        order; the translated sub-kind is not kept)."""
        holes = set(self.holes)
        columns = zip(self.ids, self.classes, self.cpls, strict=True)
        for column, (insn_id, code, cpl) in enumerate(columns):
            i, step = self.instructions[insn_id], self.skips.step(column)
            cls, hole = CLASSES[code], step in holes
            yield InstructionExecuted(vm, step, i.eip, i.text, cls, cpl, hole, i.sensitive)

    def registers_at(self, step: int) -> tuple[int, ...]:
        """The real CPU's registers when step `step` began (0 ≤ step ≤ len); LookupError
        inside a fast-forwarded stretch (only its first and last registers are known)."""
        if not 0 <= step <= len(self):
            raise IndexError(step)
        if step == len(self) and self.final:
            return self.final
        skip = self.skips.containing(step)
        if skip is not None and step != skip.start:
            raise LookupError(f"step {step:,} was fast-forwarded: its registers are not recorded")
        column = skip.column if skip is not None else self.skips.column(step)
        assert column is not None
        # Walk the masks from the nearest full copy: a keyframe, or where a stretch ended.
        start, offset, values = 0, 0, self.initial
        if self.keyframes:
            index = min(column // KEYFRAME, len(self.keyframes) - 1)
            start, (offset, values) = index * KEYFRAME, self.keyframes[index]
        base = self.skips.step(start)
        skip = self.skips.before(step)
        if skip is not None and skip.end >= base:
            start, offset, values, base = skip.column, skip.offset, skip.after, skip.end
        cached, cached_column, cached_offset, cached_values = self._last_registers
        if base <= cached <= step:  # from the last answer, if it is nearer (same stretch)
            start, offset, values = cached_column, cached_offset, cached_values
        current = list(values)
        for mask in self.reg_masks[start:column]:
            for i in range(len(REGISTERS)):
                if mask >> i & 1:
                    current[i] = self.reg_values[offset]
                    offset += 1
        self._last_registers = (step, column, offset, tuple(current))
        return self._last_registers[3]

    def class_counts(self, stop: int, start: int = 0) -> dict[str, int]:
        """Instructions by class in steps [start, stop): the traced ones from the columns,
        in C, and the fast-forwarded stretches wholly inside by their counts."""
        begin, end = self.skips.column_from(start), self.skips.column_from(stop)
        counts = {name: self.classes.count(c, begin, end) for name, c in CLASS_BY_NAME.items()}
        for skip in self.skips.between(start, stop):
            for name, count in skip.counts:
                counts[name] = counts.get(name, 0) + count
        return counts

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
            found = self.classes.find(CLASS_BY_NAME[kind], self.skips.column_from(max(after, 0)))
            return self.skips.step(found) + 1 if 0 <= found < len(self.reg_masks) else None
        return self.next_event(kind, after)

    def next_event(self, kind: str, after: int) -> int | None:
        """`next_step` for a kind of event (or holes), never an instruction class: what a
        fast-forwarded stretch records too."""
        steps, shift = self._steps_of(kind)
        index = bisect_right(steps, after - shift)
        return steps[index] + shift if index < len(steps) else None

    def next_execution(self, eip: int, after: int) -> int | None:
        """The first traced step > `after` that runs the instruction at `eip` (where the
        guest is about to run it: a breakpoint's stop)."""
        start = self.skips.column_from(after + 1)
        found = []
        for index, insn in enumerate(self.instructions):
            if insn.eip == eip:
                with suppress(ValueError):
                    found.append(self.ids.index(index, start))
        return self.skips.step(min(found)) if found else None

    def previous_step(self, kind: str, before: int) -> int | None:
        """The last step < `before` of the same kind (see `next_step`)."""
        if kind in CLASS_BY_NAME:
            end = self.skips.column_from(max(before - 1, 0))
            found = self.classes.rfind(CLASS_BY_NAME[kind], 0, end)
            return self.skips.step(found) + 1 if found >= 0 else None
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
