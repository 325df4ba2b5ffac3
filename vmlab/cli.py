"""`vmlab` on the command line: run guests headless, compare modes, JSON for scripts, and
open the lessons or the terminal UI — the composition root, above the engine, the lessons
and the UI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from hypervisor.events import Event
from hypervisor.guest.boot import GuestTooLarge
from hypervisor.guest.image import (
    KERNEL_RAM,
    GuestImage,
    default_ram,
    kernel_names,
    load_for_mode,
    load_guest,
    sample_names,
)
from hypervisor.guest.nasm import GuestBuildError
from hypervisor.machine import clock, clockbuild
from hypervisor.machine.cancel import CANCEL
from hypervisor.machine.clockbuild import ClockUnavailable
from hypervisor.machine.hostram import OutOfHostMemory
from hypervisor.platform.board import parse_ram_size
from hypervisor.session import DEFAULT_BUDGET, RunReport, compare, run_guest, run_host
from hypervisor.text import visible
from hypervisor.trace import tracefile
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.trace.tracefile import TraceFileError
from hypervisor.vmm.contract import DEFAULT_RAM, ExitReason, Mode
from hypervisor.vmm.host import LifecycleError
from hypervisor.vmm.inputs import Input, InputDevice, InputError, parse_input
from hypervisor.vmm.scheduler import DEFAULT_QUANTUM
from hypervisor.vmm.vm import Vm
from lessons.lesson import Lesson, LessonError, available, load
from lessons.walk import images, walk
from vmlab import encapcli, hostcli, interrupt
from vmlab.interrupt import ctrl_c_stops_runs
from vmlab.text import compare_lines, console, host_lines, summary, trace_line

EXIT_STATUS_DOC = """\
exit status of `vmlab run`: 0 every guest ended by itself (debug exit with status 0, or HLT
or a jump to itself with interrupts off); 1 a guest wrote a non-zero status to its debug
exit; 2 vmlab refused the input (a bad image, file or option: one line on stderr); 3 a guest
crashed or stopped on something no monitor emulates (unsupported); 4 the instruction budget
ran out first."""

RECORD_BUDGET = 2_000_000  # a traced run records ~40,000 instructions a second

INTRO = """\
vmlab — a laboratory of machine virtualization.

Real 32-bit x86 guest kernels run on an emulated machine, on bare metal (native) or under a
real monitor (trap: trap-and-emulate; bt: binary translation; pv: paravirtualization). Try:

  vmlab run hello                 a guest kernel on bare metal
  vmlab run flags --mode trap     the same idiom under trap-and-emulate: ticks stop
  vmlab compare redpill           every mode side by side: can the guest tell?
  vmlab run flags --mode pv       the ported kernel: hypercalls instead of traps
  vmlab tc kernel_loop            the translation cache: guest code beside its translation
  vmlab guests                    the sample guests
  vmlab lesson                    guided lessons (in a terminal: vmlab lesson NAME)

`vmlab --help` lists every command.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmlab", description="A laboratory of virtualization.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser(
        "run",
        help="run a guest (or several on one host) and print console and summary",
        description="Several guests run as VMs of one host, round-robin; NAME:MODE gives "
        "one VM its own mode (e.g. `vmlab run hello:trap escape:bt hog`).",
        epilog=EXIT_STATUS_DOC,
    )
    run.add_argument(
        "guest",
        nargs="+",
        help="a sample name, a .asm (needs nasm), a flat image or a multiboot kernel [:MODE]",
    )
    run.add_argument("--mode", default="native", type=_mode, choices=list(Mode))
    run.add_argument(
        "--quantum",
        type=int,
        default=DEFAULT_QUANTUM,
        metavar="N",
        help=f"several VMs: guest instructions per turn on the CPU (default {DEFAULT_QUANTUM:,})",
    )
    run.add_argument(
        "--unported",
        action="store_true",
        help="under pv, run a sample's unmodified build instead of its paravirtual one",
    )
    _common(run)
    encapcli.suspend_options(run)
    _boot_options(run)
    run.add_argument(
        "--trace",
        action="store_true",
        help="classify every instruction (slower): exact classes and holes",
    )
    _input_options(run)
    run.add_argument("--screen", action="store_true", help="print the final VGA text screen")

    cmp = sub.add_parser("compare", help="run a guest in every mode and compare with native")
    cmp.add_argument("guest")
    _common(cmp)
    _boot_options(cmp)
    cmp.add_argument(
        "--fast",
        action="store_true",
        help="no per-instruction trace: counts of traps only, no holes",
    )

    trace = sub.add_parser("trace", help="print every executed instruction with its class")
    trace.add_argument("guest")
    trace.add_argument("--mode", default="trap", type=_mode, choices=list(Mode))
    trace.add_argument("--max-insns", type=int, default=2000, metavar="N")

    tc = sub.add_parser("tc", help="run a guest under bt and print its translation cache")
    tc.add_argument("guest")
    tc.add_argument("--max-insns", type=int, default=DEFAULT_BUDGET, metavar="N")
    tc.add_argument("--limit", type=int, default=20, help="fragments to show (most hit first)")

    sub.add_parser("guests", help="list the sample guests")
    sub.add_parser("doctor", help="say which clock counts guest instructions here, and why")

    tui = sub.add_parser("tui", help="open guests in the terminal UI (step, run, rewind)")
    tui.add_argument("guest", nargs="*", help="sample names, .asm, flat images or kernels")
    tui.add_argument(
        "--cluster", metavar="ADDRESS", help="watch a live cluster (`vmlab cluster --listen`)"
    )
    tui.add_argument("--token-file", metavar="FILE", help="the cluster's token (or VMLAB_TOKEN)")
    tui.add_argument(
        "--mode",
        action="append",
        type=_mode,
        choices=list(Mode),
        help="a mode to run every guest in (repeat for several; default trap)",
    )
    _boot_options(tui)
    tui.add_argument(
        "--break",
        dest="breakpoints",
        action="append",
        default=[],
        metavar="ADDR",
        help="open fast-forwarded to where the guest first runs ADDR (0x… or a function)",
    )

    lesson = sub.add_parser("lesson", help="list the lessons, or follow one in the terminal UI")
    lesson.add_argument("name", nargs="?", help="a lesson's name (or a .toml file)")
    lesson.add_argument(
        "--walk", action="store_true", help="print each stop, where it lands and its check; no UI"
    )

    record = sub.add_parser("record", help="record a traced run into a trace file")
    record.add_argument("guest")
    record.add_argument("--mode", default="trap", type=_mode, choices=list(Mode))
    record.add_argument("-o", "--output", required=True, metavar="FILE")
    record.add_argument("--max-insns", type=int, default=RECORD_BUDGET, metavar="N")
    _boot_options(record)
    _input_options(record)

    replay = sub.add_parser("replay", help="open a trace file in the terminal UI")
    replay.add_argument("file")
    replay.add_argument(
        "--check", action="store_true", help="re-execute and compare, print the result, no UI"
    )
    _COMMANDS.update(encapcli.add_parsers(sub, _common, _mode))
    _COMMANDS.update(hostcli.add_parsers(sub, _mode))
    return parser


def _input_options(p: argparse.ArgumentParser) -> None:
    when = "when the guest next waits for input, or @STEP:TEXT at that step; \\n is Enter"
    p.add_argument("--keys", action="append", default=[], metavar="TEXT", help=f"type: {when}")
    p.add_argument(
        "--serial-input", action="append", default=[], metavar="TEXT", help=f"send to COM1: {when}"
    )


def _inputs(args: argparse.Namespace) -> tuple[Input, ...]:
    """The --keys and --serial-input options, in order of device then appearance."""
    return tuple(parse_input(InputDevice.KEYBOARD, text) for text in args.keys) + tuple(
        parse_input(InputDevice.SERIAL, text) for text in args.serial_input
    )


def _mode(name: str) -> Mode:
    try:
        return Mode(name)
    except ValueError:
        modes = ", ".join(repr(m.value) for m in Mode)  # as argparse words it
        raise argparse.ArgumentTypeError(
            f"invalid choice: {name!r} (choose from {modes})"
        ) from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-insns",
        type=int,
        default=DEFAULT_BUDGET,
        metavar="N",
        help=f"instruction budget (default {DEFAULT_BUDGET:,})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _boot_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ram",
        type=_ram_size,
        metavar="SIZE",
        help=f"RAM of each VM, e.g. 32M (default {KERNEL_RAM >> 20}M for a multiboot kernel, "
        f"as qemu -kernel gives it, {DEFAULT_RAM >> 20}M for a flat sample; at most 1G)",
    )
    p.add_argument("--cmdline", metavar="TEXT", help="a multiboot kernel's command line")
    p.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="FILE[=STRING]",
        help="a multiboot module (repeat for several); STRING is its string (default FILE)",
    )


def _ram_size(text: str) -> int:
    try:
        return parse_ram_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _ram(args: argparse.Namespace, images: Sequence[GuestImage]) -> int:
    """`--ram`, else the default for these guests (`default_ram`)."""
    return args.ram if args.ram is not None else default_ram(images)


def _image(spec: str, mode: Mode, args: argparse.Namespace) -> GuestImage:
    return load_for_mode(
        spec,
        mode,
        unported=getattr(args, "unported", False),
        cmdline=args.cmdline,
        modules=tuple(args.module),
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        if sys.stdin.isatty() and sys.stdout.isatty():
            return _open_ui(_demo())
        print(INTRO, end="")
        return 0
    if getattr(args, "max_insns", 1) < 1:
        print("vmlab: --max-insns must be at least 1", file=sys.stderr)
        return 2
    try:
        if not _opens_ui(args):
            with ctrl_c_stops_runs():
                status = _COMMANDS[args.command](args)
            return interrupt.STATUS if CANCEL.requested else status
        return _COMMANDS[args.command](args)
    except (
        GuestBuildError,
        GuestTooLarge,
        TraceFileError,
        OutOfHostMemory,
        LifecycleError,
        *encapcli.ERRORS,
        *hostcli.ERRORS,
        InputError,
        ClockUnavailable,
    ) as err:
        print(f"vmlab: {visible(str(err), lines=True)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `vmlab trace … | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _opens_ui(args: argparse.Namespace) -> bool:
    """The terminal UI takes Ctrl-C as a key; every other command stops its runs on it."""
    command = args.command
    return command == "tui" or (
        (command == "replay" and not args.check)
        or (command == "lesson" and args.name is not None and not args.walk)
    )


def _run(args: argparse.Namespace) -> int:
    if args.suspend_at is not None:

        def load(spec: str) -> tuple[GuestImage, int]:
            image = _image(spec, args.mode, args)
            return image, _ram(args, [image])

        return encapcli.run_and_suspend(args, load)
    guests = [_guest_and_mode(spec, args.mode) for spec in args.guest]
    if len(guests) > 1 or guests[0][1] != args.mode:
        return _run_host(args, guests)
    image = _image(args.guest[0], args.mode, args)
    report = run_guest(
        image,
        args.mode,
        max_insns=args.max_insns,
        trace=args.trace,
        ram_size=_ram(args, [image]),
        inputs=_inputs(args),
    )
    if args.json:
        print(json.dumps({"vms": [report.as_json()]}, indent=2))
    else:
        for line in (*console(report.console), summary(report)):
            print(line)
        if args.screen:
            print("\n".join(report.screen))
    return exit_status([report])


def exit_status(reports: Sequence[RunReport]) -> int:
    """The process's exit status for a run (EXIT_STATUS_DOC): the worst VM's outcome."""
    reasons = {r.exit.reason for r in reports}
    if reasons & {ExitReason.CRASHED, ExitReason.UNSUPPORTED}:
        return 3
    if ExitReason.BUDGET in reasons:
        return 4
    return 1 if any(r.exit.status for r in reports) else 0


def _guest_and_mode(spec: str, default: Mode) -> tuple[str, Mode]:
    """`hello` or `hello:trap` (a mode after the last colon, if it names one)."""
    guest, _, mode = spec.rpartition(":")
    if guest and mode in list(Mode):
        return guest, Mode(mode)
    if guest and not Path(spec).exists():
        raise GuestBuildError(f"{spec}: unknown mode {mode!r} (modes: {', '.join(Mode)})")
    return spec, default


def _run_host(args: argparse.Namespace, guests: list[tuple[str, Mode]]) -> int:
    if args.quantum < 1:
        print("vmlab: --quantum must be at least 1", file=sys.stderr)
        return 2
    if args.trace or args.keys or args.serial_input or args.screen:
        print("vmlab: --trace, --keys, --serial-input and --screen take one guest", file=sys.stderr)
        return 2
    vms = [(_image(spec, mode, args), mode) for spec, mode in guests]
    report = run_host(
        vms,
        max_insns=args.max_insns,
        quantum=args.quantum,
        ram_size=_ram(args, [image for image, _ in vms]),
    )
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return exit_status(report.vms)
    for line in host_lines(report):
        print(line)
    return exit_status(report.vms)


def _compare(args: argparse.Namespace) -> int:
    # A sample's name (a string) runs its paravirtual build under pv; a kernel given boot
    # options is a multiboot kernel, one build for every mode.
    boot_options = args.cmdline is not None or args.module
    image = _image(args.guest, Mode.NATIVE, args)
    reports = compare(
        image if boot_options else args.guest,
        max_insns=args.max_insns,
        trace=not args.fast,
        ram_size=_ram(args, [image]),
    )
    if args.json:
        print(json.dumps({"vms": [r.as_json() for r in reports]}, indent=2))
        return 0
    for line in compare_lines(reports):
        print(line)
    return 0


def _trace(args: argparse.Namespace) -> int:
    def show(event: Event) -> None:  # as it happens: a long trace is never kept
        line = trace_line(event)
        if line is not None:
            print(line)

    report = run_guest(args.guest, args.mode, max_insns=args.max_insns, trace=True, on_event=show)
    print(summary(report))
    return 0


def _guests(args: argparse.Namespace) -> int:
    for name in sample_names():
        print(name)
    for name in kernel_names():
        print(f"{name}  (a multiboot kernel in C)")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    choice = clock.choice()
    print(f"clock: {choice.kind} ({choice.reason})")
    print(f"clock helper cache: {clockbuild.cache_dir()}")
    return 0


UI_MAX_RAM = 256 << 20


def _tui(args: argparse.Namespace) -> int:
    if args.cluster:
        return hostcli.watch_cluster(args)
    if not args.guest:
        print("vmlab: name a guest to open (or --cluster ADDRESS)", file=sys.stderr)
        return 2
    modes = args.mode or [Mode.TRAP]
    vms = [(_image(name, mode, args), mode) for name in args.guest for mode in modes]
    ram = _ram(args, [image for image, _ in vms])
    if ram > UI_MAX_RAM:  # the UI keeps each VM three times (head, cursor, spare)
        print(f"vmlab: the UI runs VMs of at most {UI_MAX_RAM >> 20}M of RAM", file=sys.stderr)
        return 2
    return _open_ui(vms, breakpoints=tuple(args.breakpoints), ram_size=ram)


def _demo() -> list[tuple[GuestImage, Mode]]:
    """`flags` under trap beside the same guest under binary translation: POPF's hole, and
    the cure."""
    flags = load_guest("flags")
    return [(flags, Mode.TRAP), (flags, Mode.BT)]


def _lesson(args: argparse.Namespace) -> int:
    if args.name is None:
        for name in available():
            print(f"{name:24} {load(name).title}")
        return 0
    try:
        lesson = load(args.name)
    except LessonError as err:
        print(f"vmlab: {err}", file=sys.stderr)
        return 2
    if args.walk:
        return _walk(lesson)
    return _open_ui(images(lesson), lesson=lesson)


def _walk(lesson: Lesson) -> int:
    print(visible(lesson.title))
    failed = 0
    for landing in walk(lesson):
        stop = landing.stop
        where = f"step {landing.step:,}: {landing.last}" if landing.last else "nowhere"
        print(f"\nstop {landing.index + 1} · {stop.doing} · VM {stop.vm} → {where}")
        print(
            textwrap.fill(
                visible(" ".join(stop.text.split())),
                92,
                initial_indent="  ",
                subsequent_indent="  ",
            )
        )
        for problem in landing.problems:
            print(f"  ✗ not as expected: {problem}")
        if stop.expect and not landing.problems:
            print("  ✓ as expected: " + ", ".join(f"{k} {v}" for k, v in stop.expect.items()))
        failed += bool(landing.problems)
    return 1 if failed else 0


def _open_ui(
    vms: list[tuple[GuestImage, Mode]],
    replay: str | None = None,
    lesson: Lesson | None = None,
    breakpoints: tuple[str, ...] = (),
    ram_size: int = DEFAULT_RAM,
) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print("vmlab: the UI needs a terminal (try `vmlab run` or `vmlab trace`)", file=sys.stderr)
        return 2
    # Imported here: a headless command never pays for loading Textual.
    from tui.app import Session, open_trace, run_app

    session = (
        open_trace(replay)
        if replay
        else Session(vms=vms, lesson=lesson, breakpoints=breakpoints, ram_size=ram_size)
    )
    run_app(session, trace_path=replay)
    return 0


def _record(args: argparse.Namespace) -> int:
    tracefile.check_target(args.output)
    image = _image(args.guest, args.mode, args)
    trace = tracefile.record(image, args.mode, args.max_insns, _inputs(args), _ram(args, [image]))
    tracefile.save(args.output, trace)
    steps = len(trace.recording)
    size = Path(args.output).stat().st_size
    ending = trace.recording.exit.reason if trace.recording.exit else ExitReason.BUDGET
    print(
        f"recorded {steps:,} steps of {image.name} under {args.mode} ({ending}) to "
        f"{args.output}: {size:,} bytes, {size / max(steps, 1):.2f} bytes/step"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    if not args.check:
        tracefile.load(args.file)  # a bad file: one line on stderr before any UI starts
        return _open_ui([], replay=args.file)
    trace = tracefile.load(args.file)
    machine = TimeMachine(trace.image, trace.mode, recording=trace.recording)
    problems = machine.verify()
    steps = len(trace.recording)
    for problem in problems:
        print(visible(f"vmlab: {args.file}: {problem}"), file=sys.stderr)
    if not problems:
        print(
            visible(f"{args.file}: {trace.image.name}")
            + f" under {trace.mode}, {steps:,} steps: replays exactly"
        )
    return 1 if problems else 0


def _tc(args: argparse.Namespace) -> int:
    vm = Vm(load_guest(args.guest), Mode.BT)
    vm.run(args.max_insns)
    tc = vm.executor.introspect()
    assert tc is not None  # binary translation has a cache
    counters = tc.counters()
    print(
        f"{args.guest}: translation cache after {vm.stats.total:,} guest instructions "
        f"({vm.exit.reason if vm.exit else 'running'})"
    )
    print("   " + ", ".join(f"{k} {v:,}" for k, v in counters.items()) + "\n")
    for block in tc.listing(args.limit):
        print(block)
    return 0


_COMMANDS: dict[str, encapcli.Command] = {
    "run": _run,
    "compare": _compare,
    "trace": _trace,
    "tc": _tc,
    "guests": _guests,
    "doctor": _doctor,
    "lesson": _lesson,
    "tui": _tui,
    "record": _record,
    "replay": _replay,
}

if __name__ == "__main__":
    sys.exit(main())
