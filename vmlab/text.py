"""How runs read on a terminal: the summary after a run, the table of `vmlab compare`, the
lines of `vmlab trace`, the report of a host."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from hypervisor.events import (
    Event,
    Hypercall,
    InsnClass,
    InstructionExecuted,
    PageFaultHandled,
    Trap,
)
from hypervisor.session import HostReport, RunReport
from hypervisor.text import visible
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.isolation import unanswered_line


def console(text: str) -> Iterator[str]:
    """A console's output as lines to print (a last line without its newline ends too)."""
    if text:  # the guest's bytes: its control characters shown, never obeyed
        yield visible(text, lines=True).removesuffix("\n")


def summary(report: RunReport) -> str:
    """The lines after a run: how it ended, what ran how, what the monitor did."""
    exit_ = report.exit
    status = f" (status {exit_.status})" if exit_.status is not None else ""
    classes = ", ".join(f"{k} {v:,}" for k, v in report.instructions.items() if v and k != "total")
    lines = [
        f"── {visible(report.guest)} under {report.mode}: {exit_.reason}{status} — "
        f"{visible(exit_.detail)}",
        f"   instructions: {report.instructions['total']:,}" + (f" ({classes})" if classes else ""),
    ]
    if report.traps:
        lines.append("   traps: " + ", ".join(f"{k} ×{v}" for k, v in report.traps.items()))
    if report.callouts:
        lines.append("   callouts: " + ", ".join(f"{k} ×{v}" for k, v in report.callouts.items()))
    if report.hypercalls:
        lines.append(
            "   hypercalls: " + ", ".join(f"{k} ×{v}" for k, v in report.hypercalls.items())
        )
    if report.mode == Mode.PV and not report.paravirtual:
        lines.append(
            "   the guest is not paravirtualized (no -DPARAVIRT build): pv ran it as "
            "trap-and-emulate, holes included"
        )
    if report.tcache:
        t = report.tcache
        lines.append(
            f"   translation cache: {t['fragments']} fragments, {t['bytes']:,} of "
            f"{t['capacity']:,} bytes, {t['hits']} hits / {t['misses']} misses, "
            f"{t['chains']} chains, {t['invalidations']} invalidations, {t['flushes']} flushes, "
            f"{t['adaptive']} adaptive"
        )
    c = report.cycles
    lines.append(
        f"   cost model ({c['profile']}): {c['virtual']:,} virtual cycles for "
        f"{c['native_equivalent']:,} on bare metal — overhead {c['overhead_pct']}%"
        + (f", the MMU's share {c['mmu_share_pct']}%" if c.get("mmu_share_pct") else "")
    )
    if report.holes:
        lines.append(
            "   ⚠ holes (sensitive, ran directly, unseen by the monitor): "
            + ", ".join(f"{k} ×{v}" for k, v in report.holes.items())
        )
    elif report.mode != Mode.NATIVE and not report.traced:
        lines.append("   (holes are found by a traced run: add --trace)")
    if report.isolation and (line := unanswered_line(report.isolation)):
        lines.append(line)
    return "\n".join(lines)


def host_lines(report: HostReport) -> Iterator[str]:
    for vm in report.vms:
        hosted = vm.hosted
        assert hosted is not None  # every VM of a host report
        yield f"══ {visible(hosted.name)} ({vm.mode}) ══"
        yield from console(vm.console)
        yield summary(vm)
        yield (
            f"   on the host: {hosted.state}, {hosted.cpu.quanta} quanta, "
            f"{hosted.share:.1%} of the guest instructions, "
            f"{hosted.cycles_share:.1%} of the cycles"
        )
        isolation = hosted.isolation.summary()
        kinds = ", ".join(f"{k} ×{v}" for k, v in isolation["by_kind"].items())
        yield f"   isolation events: {isolation['events']}" + (f" ({kinds})" if kinds else "")
        yield ""
    yield (
        f"host: {report.ram >> 20} MiB of RAM, quantum {report.quantum:,} instructions, "
        f"{report.world_switches:,} world switches"
    )
    for entry in report.map:
        yield f"   {entry.start:#010x}-{entry.end - 1:#010x}  {entry.owner}"


def compare_lines(reports: Sequence[RunReport]) -> Iterator[str]:
    """Every mode's run beside bare metal's (the first report)."""
    native = reports[0]
    classes = tuple(InsnClass)
    yield f"{native.guest}: every mode against bare metal\n"
    yield (
        f"{'mode':<6} {'console':<9} {'exit':<16} {'total':>10} "
        + " ".join(f"{c:>10}" for c in classes)
        + f" {'overhead':>9}  what the monitor did"
    )
    for r in reports:
        same = "= native" if r.console == native.console else "DIFFERS"
        status = f" ({r.exit.status})" if r.exit.status is not None else ""
        counts = " ".join(f"{r.instructions[c]:>10,}" for c in classes)
        detail = "; ".join(
            f"{label} " + ", ".join(f"{k}×{v}" for k, v in table.items())
            for label, table in (
                ("traps", r.traps),
                ("callouts", r.callouts),
                ("hypercalls", r.hypercalls),
                ("⚠", r.holes),
            )
            if table
        )
        yield (
            f"{r.mode:<6} {same:<9} {r.exit.reason + status:<16} {r.instructions['total']:>10,} "
            f"{counts} {r.cycles['overhead_pct']:>8.1f}%  {detail}"
        )
    for r in reports[1:]:
        if r.console != native.console and r.holes:
            yield (
                f"\n{r.mode}: the console differs from bare metal; sensitive instructions ran "
                f"unseen by the monitor: {', '.join(r.holes)}"
            )


def trace_line(event: Event) -> str | None:
    """An executed instruction, a trap or a hypercall as `vmlab trace` shows it."""
    if isinstance(event, InstructionExecuted):
        mark = "⚠" if event.hole else " "
        return (
            f"{event.step:>8}  {event.eip:08x}  ring{event.cpl}  {event.cls.value:<10}"
            f"{mark} {event.text}"
        )
    if isinstance(event, Trap):
        return f"{'':>8}  {'':8}  {'':5}  └ trap #{event.vector}: {event.outcome}" + (
            f" — {event.detail}" if event.detail else ""
        )
    if isinstance(event, PageFaultHandled):
        code = f", error code {event.error_code:#x}" if event.outcome == "true" else ""
        where = f"{event.address:#010x}{code}"
        return f"{'':>8}  {'':8}  {'':5}  └ {event.outcome} page fault at {where}"
    if isinstance(event, Hypercall):
        shown = ", ".join(f"{a:#x}" for a in event.args)
        result = "" if event.result is None else f" = {event.result:#x}"
        return f"{'':>8}  {'':8}  {'':5}  └ hypercall {event.name}({shown}){result}" + (
            f" — refused: {event.error}" if event.error else ""
        )
    return None
