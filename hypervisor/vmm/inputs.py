"""Input from outside the VM (keys typed, bytes sent to COM1): the one non-deterministic thing
a guest sees, made deterministic by its steps.

Every input reaches the guest at one step, and is then an `InputDelivered` event with that
step. An `InputScript` is what a VM is given: inputs due at a step (from `--keys @STEP:TEXT`,
or recorded by an earlier run), and inputs to hand over whenever the guest next waits (HLT
with interrupts on, polling a status register with nothing to read, or spinning on a jump to
itself with interrupts on). Only the script's
*live* VM takes the waiting ones: it turns each into an input due at the step where it
delivered it, so every re-execution of the run (time travel's cursor, a replay) delivers the
same input at the same step and sees the same machine.
"""

from __future__ import annotations

import codecs
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from hypervisor.devices.scancodes import typeable
from hypervisor.events import Event, InputDelivered


class InputDevice(StrEnum):
    KEYBOARD = "keyboard"  # the 8042's keyboard: text typed, as set-1 scan codes
    SERIAL = "serial"  # COM1's receiver: bytes (latin-1)


@dataclass(frozen=True, slots=True)
class Input:
    """`text` for `device`, at `step` (None: when the guest next waits)."""

    device: InputDevice
    text: str
    step: int | None = None


class InputError(ValueError):
    """A bad input specification; the message is one line for the user."""


def parse_input(device: InputDevice, spec: str) -> Input:
    """`TEXT` (when the guest next waits) or `@STEP:TEXT`; backslash escapes as in Python
    (`\\n` is Enter)."""
    step: int | None = None
    if spec.startswith("@"):
        head, colon, spec = spec[1:].partition(":")
        if not colon or not head.replace("_", "").isdigit():
            raise InputError(f"{spec!r}: expected @STEP:TEXT, e.g. @5000:hello\\n")
        step = int(head)
    try:
        text = codecs.decode(spec, "unicode_escape") if "\\" in spec else spec
    except UnicodeDecodeError as err:
        raise InputError(f"{spec!r}: bad escape ({err.reason})") from None
    if device is InputDevice.KEYBOARD and not typeable(text):
        raise InputError(f"{text!r}: a character no key of a US keyboard types")
    if device is InputDevice.SERIAL and any(ord(c) > 0xFF for c in text):
        raise InputError(f"{text!r}: serial input is bytes (latin-1 characters)")
    return Input(device, text, step)


class InputScript:
    """The inputs of one run: `timed` in step order, `waiting` in the order given. An
    `interactive` run (the UI, where a user may type at any time) pauses a guest that sleeps
    with nothing left to wake it, instead of ending it as halted."""

    def __init__(self, inputs: tuple[Input, ...] = (), *, interactive: bool = False) -> None:
        self.interactive = interactive
        self.timed: list[Input] = []
        self.waiting: deque[Input] = deque()
        self.live: object | None = None  # the one VM that takes waiting inputs
        for item in inputs:
            self.add(item)

    @classmethod
    def replaying(cls, events: list[Event]) -> InputScript:
        """The inputs a recorded run was given, each at the step it arrived."""
        return cls(
            tuple(
                Input(InputDevice(e.device), e.text, e.step)
                for e in events
                if isinstance(e, InputDelivered)
            )
        )

    def add(self, item: Input) -> None:
        """An input: due at its step, or waiting if it has none."""
        if item.step is None:
            self.waiting.append(item)
        else:
            step = item.step
            self.timed.insert(bisect_right(self.timed, step, key=lambda t: t.step or 0), item)

    def due(self, done: int) -> int | None:
        """The step of the next timed input after the first `done`, if any."""
        return self.timed[done].step if done < len(self.timed) else None

    def take_waiting(
        self, vm: object, step: int, device: InputDevice | None = None
    ) -> Input | None:
        """The next waiting input (for `device`, if given) for the live VM, now due at
        `step`; None for any other VM."""
        item = self._waiting_for(vm, device)
        if item is None:
            return None
        self.waiting.remove(item)
        timed = Input(item.device, item.text, step)
        self.add(timed)
        return timed

    def has_waiting(self, vm: object, device: InputDevice | None = None) -> bool:
        return self._waiting_for(vm, device) is not None

    def _waiting_for(self, vm: object, device: InputDevice | None) -> Input | None:
        if vm is not self.live:
            return None
        return next((i for i in self.waiting if device in (None, i.device)), None)
