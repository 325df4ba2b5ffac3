"""Recording a VM as it runs: its traced instructions into a `Recording`'s columns, its
events as they come, and fast-forwarded stretches where it ran untraced."""

from __future__ import annotations

from unicorn import UC_HOOK_CODE, Uc

from hypervisor.events import ConsoleOutput, Event, InsnClass, VmStateChanged
from hypervisor.machine.codehook import WriteHook
from hypervisor.trace.recording import WORDS, Recording, unpack_registers
from hypervisor.vmm.contract import ExitInfo, VmState
from hypervisor.vmm.pagefault import store_address
from hypervisor.vmm.vm import Vm

CHUNK = 1 << 16  # steps a recorder runs between two diffs of its register reads
_TRANSIENT_STATES = frozenset({VmState.RUNNING, VmState.PAUSED})


class Recorder:
    """Records a VM's traced runs into a `Recording`.

    It takes the VM's instructions as their sink (`InstructionSink`: straight into the
    columns), listens to its other events, and while the VM runs watches each traced
    instruction (the registers: the tracer calls `_advance`, the event log's `watch`) and
    each memory write (a hook of its own). Register state is taken at the *last* time the
    watch fires for a step: a step can be announced, then preceded by the monitor's work (a
    world switch, an interrupt delivery) before it really runs.
    """

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self._raw = vm.machine.registers.raw
        self._last_write: tuple[int, int, int, int] | None = None  # (step, address, size, value)
        # Raw register reads at the start of steps `_at - n + 1 … _at`, not yet diffed into
        # the columns; the last one is rewritten while its step is announced again.
        self._states = bytearray(self._raw())
        self._last = b""  # the registers after the last step recorded
        self._at = vm.step  # the step whose registers end `_states`
        self.recording = Recording(
            vm.image.name,
            vm.mode,
            vm.image.sha256,
            vm.machine.ram_size,
            initial=unpack_registers(self._states),
        )
        self._console = ""
        self.hits: list[int] = []  # steps where a fast-forward met a breakpoint
        vm.events.subscribe(self._on_event)
        vm.events.instructions = self.recording.sink()

    def run(self, count: int) -> ExitInfo:
        """Run the VM traced for up to `count` instructions, recording them (in pieces of
        at most CHUNK steps, so that the register reads waiting to be diffed stay few)."""
        machine, vm = self.vm.machine, self.vm
        hook = WriteHook(machine.uc, self._on_write)
        vm.events.watch = self._advance
        end = vm.step + count
        try:
            while True:
                began = vm.step
                exit_info = vm.run(min(end - vm.step, CHUNK), trace=True)
                self._advance(vm.step, self._raw())
                self._flush()
                # a budget that did not move the VM is a pause (a guest asleep until input)
                if exit_info.reason != "budget" or vm.step >= end or vm.step == began:
                    break
        finally:
            vm.events.watch = None
            hook.remove()
        if self._last:
            self.recording.final = unpack_registers(self._last)
        self._ended(exit_info)
        return exit_info

    def fast_forward(
        self, count: int, breakpoints: frozenset[int] = frozenset(), *, exact: bool = True
    ) -> ExitInfo:
        """Run the VM untraced (at full speed) for up to `count` instructions: its events
        are recorded as they come, its instructions as a fast-forwarded stretch. Each time
        it is about to run an instruction at one of `breakpoints`, that step is appended to
        `hits` (a code hook bounded to the address costs nothing elsewhere; translated
        kernel code runs from the translation cache, where no such hook fires). Not
        `exact`, it may end a few instructions late (bt ends fragments whole)."""
        vm, uc = self.vm, self.vm.machine.uc
        before = class_counts(vm)
        hooks = [uc.hook_add(UC_HOOK_CODE, self._on_break, None, a, a) for a in breakpoints]
        if breakpoints:  # and where the CPU runs the guest's code elsewhere (bt's TC)
            vm.executor.watch_code(breakpoints, self.hits.append)
        try:
            exit_info = vm.run(count, quantum=not exact)
        finally:
            for hook in hooks:
                uc.hook_del(hook)
            vm.executor.unwatch_code()
        self._skipped(before)
        self._ended(exit_info)
        return exit_info

    def _skipped(self, before: dict[str, int]) -> None:
        counts = {name: n - before[name] for name, n in class_counts(self.vm).items()}
        state = self._raw()
        self.recording.add_skip(self.vm.step, counts, unpack_registers(state))
        self._states[:] = state
        self._at = self.vm.step
        self._last = state

    def _on_break(self, uc: Uc, address: int, size: int, _: object) -> None:
        self.hits.append(self.vm.step - 1)

    def mark(self) -> tuple[int, str]:
        """Where the recording of events stands (at a checkpoint), for `rewind`."""
        return len(self.recording.events), self._console

    def rewind(self, mark: tuple[int, str]) -> None:
        """The VM was put back to where `mark` was taken, inside a fast-forward that has not
        ended: what it emitted since will be emitted again."""
        count, self._console = mark
        self.recording.truncate_events(count)
        self.recording.exit = None
        state = self._raw()
        self.recording.drop_skips(self.vm.step, unpack_registers(state))
        self._states[:] = state
        self._at = self.vm.step
        self._last = state

    def _ended(self, exit_info: ExitInfo) -> None:
        if exit_info.final:
            self._flush_console()
            self.recording.exit = exit_info

    # ------------------------------------------------------------------ hooks
    def _advance(self, step: int, registers: bytes) -> None:
        """The registers at the start of `step` (the event log's `watch`: the tracer calls
        it at every traced instruction, with a word of CR0 after them)."""
        state = registers[:WORDS]
        if step == self._at:
            self._states[-WORDS:] = state
            return
        if step > self._at:
            # a count that jumped: the steps in between begin with the same registers
            self._states += state * (step - self._at)
            self._at = step
            self._last = state

    def _flush(self) -> None:
        self.recording.add_states(self._states)
        del self._states[:-WORDS]

    def _on_write(self, address: int, size: int, value: int) -> None:
        """A store of the CPU's: unicorn reports where it lands in physical memory. One into
        the monitor's own pages (binary translation's vCPU area, a descriptor's accessed bit
        in a shadow GDT) is the monitor's, not the guest's; with paging on, the guest's is
        kept at the linear address its instruction names."""
        machine = self.vm.machine
        if address & ~0xFFF in machine.monitor_pages:
            return
        if machine.paging_on():
            address = store_address(machine.linear_fixed(), machine.state(), address)
        write = (self._at, address, size, value)
        if write == self._last_write:  # a store into a write-protected page (translated code,
            return  # dirty logging) is reported, refused, then made again when the CPU restarts
        self._last_write = write
        self.recording.add_write(*write)

    def _on_event(self, event: Event) -> None:
        recording = self.recording
        if isinstance(event, ConsoleOutput):
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


def class_counts(vm: Vm) -> dict[str, int]:
    """The VM's instructions by class so far, from its counters: what the monitor did not
    count (an untraced run counts only what it sees) ran in the mode's own class."""
    counts = {c.value: vm.stats.by_class.get(c.value, 0) for c in InsnClass}
    mode = vm.mode_class.value
    counts[mode] = vm.stats.total - sum(n for name, n in counts.items() if name != mode)
    return counts
