"""`vmlab` on the command line: run guests headless, compare modes, JSON for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from hypervisor.guest.image import sample_names
from hypervisor.guest.nasm import GuestBuildError
from hypervisor.session import DEFAULT_BUDGET, RunReport, compare, run_guest
from hypervisor.vmm.executors import available_modes
from hypervisor.vmm.vm import GuestTooLarge

INTRO = """\
vmlab — a laboratory of machine virtualization.

Real 32-bit x86 guest kernels run on an emulated machine, on bare metal (native) or under a
real monitor (trap: trap-and-emulate). Try:

  vmlab run hello                 a guest kernel on bare metal
  vmlab run flags --mode trap     the same idiom under trap-and-emulate: ticks stop
  vmlab compare redpill           every mode side by side: can the guest tell?
  vmlab guests                    the sample guests

`vmlab --help` lists every command.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmlab", description="A laboratory of virtualization.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="run a guest and print its console and a summary")
    run.add_argument("guest", help="a sample name, a .asm (needs nasm) or a .bin")
    run.add_argument("--mode", default="native", choices=available_modes())
    _common(run)
    run.add_argument(
        "--trace",
        action="store_true",
        help="classify every instruction (slower): exact classes and holes",
    )

    cmp = sub.add_parser("compare", help="run a guest in every mode and compare with native")
    cmp.add_argument("guest")
    _common(cmp)
    cmp.add_argument(
        "--fast",
        action="store_true",
        help="no per-instruction trace: counts of traps only, no holes",
    )

    trace = sub.add_parser("trace", help="print every executed instruction with its class")
    trace.add_argument("guest")
    trace.add_argument("--mode", default="trap", choices=available_modes())
    trace.add_argument("--max-insns", type=int, default=2000, metavar="N")

    sub.add_parser("guests", help="list the sample guests")
    return parser


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-insns",
        type=int,
        default=DEFAULT_BUDGET,
        metavar="N",
        help=f"instruction budget (default {DEFAULT_BUDGET:,})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command is None:
        print(INTRO, end="")
        return 0
    if getattr(args, "max_insns", 1) < 1:
        print("vmlab: --max-insns must be at least 1", file=sys.stderr)
        return 2
    try:
        return _COMMANDS[args.command](args)
    except (GuestBuildError, GuestTooLarge) as err:
        print(f"vmlab: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    report = run_guest(args.guest, args.mode, max_insns=args.max_insns, trace=args.trace)
    if args.json:
        print(json.dumps({"vms": [report.as_json()]}, indent=2))
    else:
        sys.stdout.write(report.console)
        if report.console and not report.console.endswith("\n"):
            print()
        print(_summary(report))
    return 0


def _summary(report: RunReport) -> str:
    exit_ = report.exit
    status = f" (status {exit_.status})" if exit_.status is not None else ""
    classes = ", ".join(f"{k} {v:,}" for k, v in report.instructions.items() if v and k != "total")
    lines = [
        f"── {report.guest} under {report.mode}: {exit_.reason}{status} — {exit_.detail}",
        f"   instructions: {report.instructions['total']:,}" + (f" ({classes})" if classes else ""),
    ]
    if report.traps:
        lines.append("   traps: " + ", ".join(f"{k} ×{v}" for k, v in report.traps.items()))
    if report.holes:
        lines.append(
            "   ⚠ holes (sensitive, ran directly, unseen by the monitor): "
            + ", ".join(f"{k} ×{v}" for k, v in report.holes.items())
        )
    elif report.mode != "native" and not report.traced:
        lines.append("   (holes are found by a traced run: add --trace)")
    return "\n".join(lines)


def _compare(args: argparse.Namespace) -> int:
    reports = compare(args.guest, max_insns=args.max_insns, trace=not args.fast)
    if args.json:
        print(json.dumps({"vms": [r.as_json() for r in reports]}, indent=2))
        return 0
    native = reports[0]
    classes = ("native", "direct", "trapped")
    header = (
        f"{'mode':<8} {'console':<10} {'exit':<18} {'instructions':>12} "
        + " ".join(f"{c:>8}" for c in classes)
        + "  traps ; holes"
    )
    print(f"{native.guest}: every mode against bare metal\n")
    print(header)
    for r in reports:
        same = "= native" if r.console == native.console else "DIFFERS"
        status = f" ({r.exit.status})" if r.exit.status is not None else ""
        traps = ", ".join(f"{k}×{v}" for k, v in r.traps.items())
        holes = ", ".join(f"⚠{k}×{v}" for k, v in r.holes.items())
        counts = " ".join(f"{r.instructions[c]:>8,}" for c in classes)
        print(
            f"{r.mode:<8} {same:<10} {r.exit.reason + status:<18} "
            f"{r.instructions['total']:>12,} {counts}  {' ; '.join(p for p in (traps, holes) if p)}"
        )
    for r in reports[1:]:
        if r.console != native.console and r.holes:
            print(
                f"\n{r.mode}: the console differs from bare metal; sensitive instructions ran "
                f"unseen by the monitor: {', '.join(r.holes)}"
            )
    return 0


def _trace(args: argparse.Namespace) -> int:
    from hypervisor.trace.events import InstructionExecuted, Trap

    report = run_guest(
        args.guest, args.mode, max_insns=args.max_insns, trace=True, keep_events=True
    )
    for event in report.events:
        if isinstance(event, InstructionExecuted):
            mark = "⚠" if event.hole else " "
            print(
                f"{event.step:>8}  {event.eip:08x}  ring{event.cpl}  {event.cls.value:<10}"
                f"{mark} {event.text}"
            )
        elif isinstance(event, Trap):
            print(
                f"{'':>8}  {'':8}  {'':5}  └ trap #{event.vector}: {event.outcome}"
                + (f" — {event.detail}" if event.detail else "")
            )
    print(_summary(report))
    return 0


def _guests(args: argparse.Namespace) -> int:
    for name in sample_names():
        print(name)
    return 0


_COMMANDS = {"run": _run, "compare": _compare, "trace": _trace, "guests": _guests}

if __name__ == "__main__":
    sys.exit(main())
