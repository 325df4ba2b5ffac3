"""What the UI asks the engine thread to do: one frozen dataclass per command, so a command
and its arguments are checked where they are written, not when the engine runs them."""

from __future__ import annotations

from dataclasses import dataclass

from hypervisor.trace.timetravel import Goal
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.inputs import InputDevice


@dataclass(frozen=True)
class Step:
    """Every VM one step on (or `count`)."""

    count: int = 1


@dataclass(frozen=True)
class Back:
    """Every VM one step back (or `count`)."""

    count: int = 1


@dataclass(frozen=True)
class Seek:
    """To a step (recording ahead if needed, with progress; escape cancels)."""

    step: int


@dataclass(frozen=True)
class Run:
    """Run mode on, or off."""


@dataclass(frozen=True)
class Pause:
    """Run mode off; also stops a long search."""


@dataclass(frozen=True)
class Speed:
    """Run mode's speed, `change` steps up or down the scale."""

    change: int


@dataclass(frozen=True)
class Next:
    """To the next `kind` (an event kind, an instruction class, a hole) in the focused VM."""

    kind: str


@dataclass(frozen=True)
class Previous:
    """To the previous `kind` in the focused VM."""

    kind: str


@dataclass(frozen=True)
class Focus:
    """The panes show another VM."""

    change: int = 1


@dataclass(frozen=True)
class SetMode:
    """Restart the focused VM in `mode` (the next one if None), from step 0."""

    mode: Mode | None = None


@dataclass(frozen=True)
class Clock:
    """Between each VM's own steps and the host's clock."""


@dataclass(frozen=True)
class LessonStop:
    """To the lesson's next (`change` 1) or previous (-1) stop."""

    change: int


@dataclass(frozen=True)
class Annotate:
    """An instructor's note at the focused VM's step (empty: removed)."""

    text: str


@dataclass(frozen=True)
class Filter:
    """The event kinds the events pane hides."""

    hidden: frozenset[str]


@dataclass(frozen=True)
class Save:
    """The focused VM's recording to a trace file."""

    path: str


@dataclass(frozen=True)
class TakeSnapshot:
    """A named snapshot of the focused VM where it stands."""

    name: str


@dataclass(frozen=True)
class RevertSnapshot:
    """Back to a snapshot of the focused VM."""

    name: str


@dataclass(frozen=True)
class DeleteSnapshot:
    """A snapshot of the focused VM forgotten (its children go to its parent)."""

    name: str


@dataclass(frozen=True)
class FastForward:
    """Record ahead untraced, at full speed, to a step, a breakpoint or the next event of a
    kind (the panes follow it live; escape stops it)."""

    goal: Goal


@dataclass(frozen=True)
class SendInput:
    """Keys (or COM1 bytes) the user typed, for the focused VM's guest."""

    device: InputDevice
    text: str


@dataclass(frozen=True)
class Walk:
    """The page tables pane shows `address` (None: EIP, or the last step's write)."""

    address: int | None


Command = (
    Step
    | Back
    | Seek
    | FastForward
    | Run
    | Pause
    | Speed
    | Next
    | Previous
    | Focus
    | SetMode
    | Clock
    | LessonStop
    | Annotate
    | Filter
    | Save
    | TakeSnapshot
    | RevertSnapshot
    | DeleteSnapshot
    | SendInput
    | Walk
)
