"""A run's summary as the command line prints it (every command that runs a VM shares it)."""

from __future__ import annotations

from hypervisor.session import RunReport
from hypervisor.vmm.contract import Mode


def summary(report: RunReport) -> str:
    """A run's summary lines (shared by the encapsulation commands)."""
    exit_ = report.exit
    status = f" (status {exit_.status})" if exit_.status is not None else ""
    classes = ", ".join(f"{k} {v:,}" for k, v in report.instructions.items() if v and k != "total")
    lines = [
        f"── {report.guest} under {report.mode}: {exit_.reason}{status} — {exit_.detail}",
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
    )
    if report.holes:
        lines.append(
            "   ⚠ holes (sensitive, ran directly, unseen by the monitor): "
            + ", ".join(f"{k} ×{v}" for k, v in report.holes.items())
        )
    elif report.mode != Mode.NATIVE and not report.traced:
        lines.append("   (holes are found by a traced run: add --trace)")
    return "\n".join(lines)
