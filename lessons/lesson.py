"""The lesson format: loading and checking a lesson file (one-line errors, never a traceback).

    title = "…"
    guests = [["flags", "trap"], ["flags", "bt"]]   # guest, mode: one VM each
    clock = "host"            # optional: the VMs take turns on one host (steps are host steps)

    [[stop]]
    go = "next hole"          # start | step N | forward N | next KIND | previous KIND
    vm = 0                    # the VM the stop looks at (and searches), 0 by default
    text = "…"                # what to read there
    expect = { last = "popf", class = "direct", hole = true }   # what the engine must show

    snapshot = "take good"    # optional: take a snapshot here, or "revert NAME" (first)
    input = { serial = "!" }  # optional: input that reaches the guest at this stop's step

A stop does, in order: revert (then `go` may be left out: it stays at the snapshot's step),
go, take, input, and checks what it expects. A revert is the universal undo: the VM is the
snapshot's state again, and the inputs given after it are forgotten (docs/encapsulation.md).

KIND is an instruction class (direct, trapped, translated, hypercall, native), an event kind
(trap, interrupt, translation, callout, isolation, state, …) or `hole`; on the host's clock
also `switch` (a world switch). Expectations: last (text of the last instruction), class,
hole, console (text it has printed), state (created, paused, exited, crashed…), cpu (on the
host's clock: whether this VM has the CPU), fault (a page fault the monitor handled at this
step: hidden, true or ptemod — where `next pagefault` lands).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from hypervisor.events import InsnClass
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.inputs import Input, InputDevice, InputError, parse_input

HERE = Path(__file__).parent
VERBS = {"start": 0, "step": 1, "forward": 1, "next": 1, "previous": 1}  # verb -> arguments
EXPECTATIONS = {
    "last": str,
    "class": str,
    "hole": bool,
    "console": str,
    "state": str,
    "cpu": bool,
    "fault": str,
}
FAULTS = ("hidden", "true", "ptemod")  # PageFaultHandled's outcomes
CLOCKS = ("steps", "host")  # each VM's own steps side by side, or the host's


class LessonError(ValueError):
    """A lesson file that cannot be used: the message names the file and the problem."""


@dataclass(frozen=True)
class Go:
    verb: str
    argument: str = ""  # a step count or an event kind

    @property
    def count(self) -> int:
        return int(self.argument)

    def __str__(self) -> str:
        return f"{self.verb} {self.argument}".strip()


class SnapshotVerb(StrEnum):
    TAKE = "take"
    REVERT = "revert"


@dataclass(frozen=True)
class SnapshotStep:
    verb: SnapshotVerb
    name: str

    def __str__(self) -> str:
        return f"{self.verb} {self.name}"


STAY = Go("forward", "0")  # where a revert stop without `go` goes: nowhere further
INPUT_KEYS = {"serial": InputDevice.SERIAL, "keys": InputDevice.KEYBOARD}


@dataclass(frozen=True)
class Stop:
    go: Go
    text: str
    vm: int = 0
    expect: dict[str, str | bool] = field(default_factory=dict)
    snapshot: SnapshotStep | None = None
    input: Input | None = None  # its step is the stop's landing

    @property
    def doing(self) -> str:
        """What the stop does, as the walk prints it: "forward 100 · serial '!'"."""
        reverting = self.snapshot is not None and self.snapshot.verb is SnapshotVerb.REVERT
        parts = [str(self.snapshot)] if reverting else []
        parts += [] if reverting and self.go == STAY else [str(self.go)]
        if self.snapshot is not None and not reverting:
            parts.append(str(self.snapshot))
        if self.input is not None:
            parts.append(f"{self.input.device} {self.input.text!r}")
        return " · ".join(parts)


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    guests: tuple[tuple[str, Mode], ...]
    stops: tuple[Stop, ...]
    clock: str = "steps"


def available() -> list[str]:
    return sorted(path.stem for path in HERE.glob("*.toml"))


def load(name: str) -> Lesson:
    """A lesson by name (from this package) or by path to a .toml file."""
    path = Path(name) if name.endswith(".toml") else HERE / f"{name}.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(available())
        raise LessonError(f"no lesson {name!r} (lessons: {known})") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise LessonError(f"{path.name}: not a lesson file: {err}") from None
    return _parse(path.stem, data, path.name)


def _parse(name: str, data: dict, where: str) -> Lesson:
    def fail(problem: str) -> LessonError:
        return LessonError(f"{where}: {problem}")

    title = data.get("title")
    if not isinstance(title, str) or not title:
        raise fail("a lesson needs a title")
    guests = data.get("guests")
    if not isinstance(guests, list) or not guests:
        raise fail('`guests` must list [guest, mode] pairs, e.g. [["flags", "trap"]]')
    pairs = []
    for pair in guests:
        if not (isinstance(pair, list) and len(pair) == 2 and all(map(_is_text, pair))):
            raise fail(f"not a [guest, mode] pair: {pair!r}")
        try:
            pairs.append((pair[0], Mode.parse(pair[1])))
        except ValueError as err:
            raise fail(str(err)) from None
    clock = data.get("clock", "steps")
    if clock not in CLOCKS:
        raise fail(f"clock must be one of {', '.join(CLOCKS)}")
    if clock == "host" and len(pairs) < 2:
        raise fail("the host's clock needs two guests or more")
    stops = data.get("stop")
    if not isinstance(stops, list) or not stops:
        raise fail("a lesson needs at least one [[stop]]")
    try:
        parsed = tuple(_stop(stop, index, len(pairs), clock) for index, stop in enumerate(stops))
        _check_snapshots(parsed)
    except LessonError as err:
        raise fail(str(err)) from None
    return Lesson(name, title, tuple(pairs), parsed, clock)


def _check_snapshots(stops: tuple[Stop, ...]) -> None:
    """A revert names a snapshot an earlier stop took of the same VM; names are unique."""
    taken: set[tuple[int, str]] = set()
    for index, stop in enumerate(stops):
        snapshot = stop.snapshot
        if snapshot is None:
            continue
        key = (stop.vm, snapshot.name)
        if snapshot.verb is SnapshotVerb.TAKE:
            if key in taken:
                raise LessonError(f"stop {index + 1}: a snapshot {snapshot.name!r} exists already")
            taken.add(key)
        elif key not in taken:
            raise LessonError(f"stop {index + 1}: no earlier stop takes {snapshot.name!r}")


def _is_text(value: object) -> bool:
    return isinstance(value, str)


def _stop(data: object, index: int, vms: int, clock: str) -> Stop:
    where = f"stop {index + 1}"
    fail = LessonError
    if not isinstance(data, dict):
        raise fail(f"{where} is not a table")
    text, vm, expect = data.get("text", ""), data.get("vm", 0), data.get("expect", {})
    if not isinstance(text, str) or not text.strip():
        raise fail(f"{where} has no text")
    if not isinstance(vm, int) or not 0 <= vm < vms:
        raise fail(f"{where}: vm must be 0 to {vms - 1}")
    snapshot = _snapshot(data.get("snapshot"), where, clock)
    reverting = snapshot is not None and snapshot.verb is SnapshotVerb.REVERT
    words = str(data.get("go", "")).split()
    if not words and reverting:
        words = [STAY.verb, STAY.argument]
    if not words or words[0] not in VERBS or len(words) - 1 != VERBS[words[0]]:
        raise fail(f"{where}: go must be start, step N, forward N, next KIND or previous KIND")
    go = Go(*words)
    if go.verb in ("step", "forward") and not go.argument.isdigit():
        raise fail(f"{where}: {go.verb} needs a number of steps")
    if clock != "host" and (go.argument == "switch" or "cpu" in expect):
        raise fail(f'{where}: world switches and the CPU are on the host\'s clock (clock = "host")')
    if not isinstance(expect, dict):
        raise fail(f"{where}: expect must be a table")
    for key, value in expect.items():
        if key not in EXPECTATIONS or not isinstance(value, EXPECTATIONS[key]):
            known = ", ".join(EXPECTATIONS)
            raise fail(f"{where}: cannot expect {key} = {value!r} (expectations: {known})")
    if "class" in expect and expect["class"] not in {c.value for c in InsnClass}:
        raise fail(f"{where}: no instruction class {expect['class']!r}")
    if "fault" in expect and expect["fault"] not in FAULTS:
        raise fail(f"{where}: a fault is {', '.join(FAULTS)}, not {expect['fault']!r}")
    return Stop(go, text.strip(), vm, expect, snapshot, _input(data.get("input"), where))


def _snapshot(value: object, where: str, clock: str) -> SnapshotStep | None:
    if value is None:
        return None
    words = value.split() if isinstance(value, str) else []
    if len(words) != 2 or words[0] not in set(SnapshotVerb):
        raise LessonError(f'{where}: snapshot must be "take NAME" or "revert NAME"')
    if clock == "host":
        raise LessonError(f"{where}: snapshots are of one VM's run (not on the host's clock)")
    return SnapshotStep(SnapshotVerb(words[0]), words[1])


def _input(value: object, where: str) -> Input | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1 or not value.keys() <= INPUT_KEYS.keys():
        raise LessonError(f'{where}: input is one of {{ serial = "…" }} or {{ keys = "…" }}')
    ((key, text),) = value.items()
    if not isinstance(text, str) or not text or text.startswith("@"):
        raise LessonError(f"{where}: the input's text is given at the stop's step (no @STEP)")
    try:
        return parse_input(INPUT_KEYS[key], text)
    except InputError as err:
        raise LessonError(f"{where}: {err}") from None
