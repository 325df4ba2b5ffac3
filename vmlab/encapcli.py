"""The encapsulation commands: suspend a run to a file, resume it, snapshot trees, clones.

vmlab run GUEST --suspend-at STEP -o vm.vmlab     run to STEP, write the VM out
vmlab resume vm.vmlab [--mode M]                  go on from it (prints what comes next)
vmlab snapshot GUEST 'run 5000' 'take a' …        a script of snapshot actions
vmlab clone vm.vmlab 8                            eight clones of it on one host
"""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypervisor.encap import vmfile
from hypervisor.encap.clones import clone
from hypervisor.encap.snapshots import SnapshotError, SnapshotTree
from hypervisor.encap.state import SuspendedVm, SuspendError, capture, restore
from hypervisor.encap.vmfile import VmFileError
from hypervisor.guest.image import GuestImage, load_for_mode
from hypervisor.session import report_of
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.guestcpu import ResumeRefused
from hypervisor.vmm.host import Host
from hypervisor.vmm.isolation import IsolationState
from hypervisor.vmm.vm import Vm
from vmlab.text import console, summary

ERRORS = (VmFileError, ResumeRefused, SuspendError, SnapshotError)
Command = Callable[[argparse.Namespace], int]
ACTIONS = "run N | take NAME | revert NAME | delete NAME | list | break-idt"


def add_parsers(
    sub: Any, common: Callable[[argparse.ArgumentParser], None], mode: Callable[[str], Mode]
) -> dict[str, Command]:
    resume = sub.add_parser("resume", help="resume a suspended VM (.vmlab) and run it on")
    resume.add_argument("file")
    resume.add_argument("--mode", type=mode, help="resume under another mode")
    common(resume)
    suspend_options(resume)

    snap = sub.add_parser(
        "snapshot",
        help="run a guest through snapshot actions (take, revert, delete, list)",
        description=f"Each action is one argument: {ACTIONS}. `break-idt` misconfigures the "
        "kernel (its IDT is lost, as a bad LIDT would leave it): its next interrupt crashes it.",
    )
    snap.add_argument("guest")
    snap.add_argument("action", nargs="+")
    snap.add_argument("--mode", type=mode, default=Mode.NATIVE)
    snap.add_argument("--json", action="store_true", help="print one JSON object")

    cl = sub.add_parser("clone", help="start N clones of a suspended VM on one host")
    cl.add_argument("file")
    cl.add_argument("count", type=int)
    cl.add_argument("--mode", type=mode, help="run the clones under another mode")
    cl.add_argument("--prefix", help="the clones' names: PREFIX-1 … (default: the VM's name)")
    common(cl)
    return {"resume": _resume, "snapshot": _snapshot, "clone": _clone}


def suspend_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suspend-at", type=int, metavar="STEP", help="suspend at this guest step")
    p.add_argument("-o", "--output", metavar="FILE", help="the .vmlab file to suspend into")


def run_and_suspend(args: argparse.Namespace, load: Callable[[str], tuple[GuestImage, int]]) -> int:
    """`vmlab run GUEST --suspend-at STEP -o FILE`; `load` gives the guest's image (with its
    boot options) and RAM as a plain `vmlab run` would."""
    if len(args.guest) != 1 or ":" in args.guest[0]:
        raise SuspendError("--suspend-at suspends one guest (in the mode --mode gives)")
    image, ram_size = load(args.guest[0])
    vm = Vm(image, args.mode, ram_size=ram_size)
    return _go_on(vm, args, 0, args.suspend_at)


def _resume(args: argparse.Namespace) -> int:
    suspended = vmfile.read(args.file)
    vm = restore(suspended, args.mode)
    return _go_on(vm, args, len(suspended.console), args.suspend_at)


def _go_on(vm: Vm, args: argparse.Namespace, shown: int, suspend_at: int | None) -> int:
    """Run `vm` to its end, its budget or `suspend_at`; print what it printed from `shown` on
    and how it stopped; suspend it into args.output if it was stopped there."""
    if suspend_at is not None and not args.output:
        raise SuspendError("--suspend-at needs -o FILE to suspend into")
    if suspend_at is not None and suspend_at <= vm.step:
        raise SuspendError(f"--suspend-at {suspend_at:,}: the VM is at step {vm.step:,} already")
    steps = args.max_insns if suspend_at is None else suspend_at - vm.step
    isolation = IsolationState.of(vm)
    vm.events.subscribe(isolation.observe)
    vm.run(steps, trace=getattr(args, "trace", False))
    saved = None
    if suspend_at is not None and vm.exit is not None and not vm.exit.final:
        vmfile.write(args.output, capture(vm))
        saved = {"file": args.output, "step": vm.step, "bytes": Path(args.output).stat().st_size}
    report = report_of(vm, isolation)
    if args.json:
        print(json.dumps({"vms": [report.as_json()], "suspended": saved}, indent=2))
        return 0
    _print_console(report.console[shown:])
    if saved:
        print(
            f"── {vm.name} under {vm.mode}: suspended at step {vm.step:,} into {args.output} "
            f"({saved['bytes']:,} bytes)"
        )
    else:
        print(summary(report))
    return 0


def _print_console(text: str) -> None:
    for line in console(text):
        print(line)


# ---------------------------------------------------------------------- snapshot scripts
def _snapshot(args: argparse.Namespace) -> int:
    vm = Vm(load_for_mode(args.guest, args.mode), args.mode)
    tree = SnapshotTree()
    log: list[dict[str, Any]] = []
    for action in args.action:
        words = shlex.split(action)
        verb, rest = (words[0], words[1:]) if words else ("", [])
        shown = len(vm.console)
        vm = _act(vm, tree, verb, rest)
        entry = {"action": action, "step": vm.step, "console": vm.console[shown:].decode("latin-1")}
        if vm.exit is not None and vm.exit.final:
            entry["exit"] = vm.exit.reason.value
        log.append(entry)
        if not args.json:
            ended = f", {vm.exit.reason}: {vm.exit.detail}" if vm.exit and "exit" in entry else ""
            print(f"» {action}  (step {vm.step:,}{ended})")
            _print_console(entry["console"])
            if verb == "list":
                print(_tree_text(tree))
    if args.json:
        print(json.dumps({"actions": log, "tree": _tree_json(tree)}, indent=2))
    return 0


def _act(vm: Vm, tree: SnapshotTree, verb: str, rest: list[str]) -> Vm:
    one = rest[0] if len(rest) == 1 else None
    if verb == "run" and one and one.isdigit():
        vm.run(int(one))
    elif verb == "take" and one:
        tree.take(vm, one)
    elif verb == "revert" and one:
        vm.machine.release()
        vm = tree.revert(one)
    elif verb == "delete" and one:
        tree.delete(one)
    elif verb == "break-idt" and not rest:
        state = capture(vm)
        vm.machine.release()
        vm = restore(replace(state, cpu=replace(state.cpu, idtr=(0, 0))))
    elif verb != "list" or rest:
        raise SnapshotError(f"{' '.join([verb, *rest])!r}: an action is one of {ACTIONS}")
    return vm


def _tree_text(tree: SnapshotTree) -> str:
    if not len(tree):
        return "   (no snapshots)"
    return "\n".join(
        f"   {'  ' * r.depth}{'●' if r.current else '○'} {r.snapshot.name}  "
        f"step {r.snapshot.step:,}"
        for r in tree.rows()
    )


def _tree_json(tree: SnapshotTree) -> list[dict[str, Any]]:
    return [
        {
            "name": r.snapshot.name,
            "parent": r.snapshot.parent,
            "step": r.snapshot.step,
            "depth": r.depth,
            "current": r.current,
        }
        for r in tree.rows()
    ]


# ---------------------------------------------------------------------- clones
def _clone(args: argparse.Namespace) -> int:
    suspended: SuspendedVm = vmfile.read(args.file)
    host = Host(watch_reads=False)
    clones = clone(suspended, args.count, mode=args.mode, prefix=args.prefix, events=host.events)
    try:
        for vm in clones.vms:
            host.add(vm, budget=suspended.step + args.max_insns)
        host.run()
        memory = clones.memory()
        reports = [report_of(vm, host[vm.name].isolation) for vm in clones.vms]
        mib = 1 << 20
        if args.json:
            print(
                json.dumps(
                    {
                        "vms": [r.as_json() for r in reports],
                        "memory": {
                            "ram_size": memory.ram_size,
                            "clones": [vars(c) for c in memory.clones],
                            "host_bytes": memory.host_bytes,
                            "saved_bytes": memory.saved_bytes,
                        },
                    },
                    indent=2,
                )
            )
            return 0
        for vm, report in zip(clones.vms, reports, strict=True):
            print(f"── {vm.name}: {report.exit.reason} at step {vm.step:,}")
            _print_console(report.console[len(suspended.console) :])
        print("host memory (pages of 4 KiB):")
        for c in memory.clones:
            print(f"   {c.name:<16} private {c.private_pages:>6}   shared {c.shared_pages:>6}")
        print(
            f"   {len(memory.clones)} clones of {memory.ram_size / mib:g} MiB take "
            f"{memory.host_bytes / mib:.2f} MiB of host RAM (full copies: "
            f"{memory.ram_size * len(memory.clones) / mib:g} MiB): "
            f"{memory.saved_bytes / mib:.2f} MiB saved"
        )
    finally:
        clones.close()
    return 0
