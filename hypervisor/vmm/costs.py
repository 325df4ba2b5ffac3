"""The cost model: what each thing the monitor did would cost on a real machine, in cycles.

vmlab runs on an emulator, so wall-clock time says little about real monitors. Instead every
event of a run is priced from a named profile, and a run reports its *virtual cycles* beside
what the same guest instructions cost on bare metal. Their ratio is the virtualization
overhead the lessons talk about; sampled along the run it shows a translation cache warming.

Sources for the default profile (Pentium 4, as measured by Adams & Agesen, "A Comparison of
Software and Hardware Techniques for x86 Virtualization", ASPLOS 2006):
* a trap-and-emulate round trip (fault, monitor, return): about 2000 cycles;
* a sensitive instruction emulated inside the translation cache: about 200 cycles in total,
  which here is spread over the instructions of the inline sequence;
* a callout from the translation cache into the monitor and back: no hardware exception, so
  cheaper than a trap; we use 800 cycles (our estimate, between the two figures above);
* translating one guest instruction: we use 600 cycles (our estimate: decode, rule, emit);
* a paravirtual hypercall (INT into the monitor): priced like a trap round trip, minus the
  decoding and emulation of the faulting instruction: 1500 cycles (our estimate).
An instruction that runs directly (or natively) costs 1 cycle; an instruction of translated
code costs 1 cycle too, so a rewritten CLI that became one store is as cheap as bare metal.

The MMU (one block, `MMU_ROWS`: the monitor's traps that are the shadow page tables' work).
Adams & Agesen single out page faults and page-table writes (their `pgfault` and `ptemod`
nanobenchmarks, on the same Pentium 4) as where a shadowing monitor's time goes: each is a
fault into the monitor and back, plus the MMU's own work. The figures below are our estimates
built on their ~2000-cycle round trip (the exact bars of their log-scale chart were not at
hand when this block was written; `benchmarks/bench_mmu.py` names the nanobenchmark each row
stands for beside what it measures):
* a hidden page fault: the round trip, a walk of two guest entries, setting A/D and one
  shadow entry: 3000 cycles;
* a true page fault: the same walk, then the guest's #PF built and delivered through its
  virtual IDT (a second entry into the guest, at its handler): 4000 cycles;
* a ptemod (a guest write to a traced page-table page): on top of the hidden fault that lets
  the write through, dropping the shadow entries derived from that page: 1000 cycles;
* a MOV CR3 (an address-space switch): the round trip, decoding and the lookup of the cached
  shadow: 2500 cycles.
Under pv's direct paging (Xen's method: no shadow, the guest's tables validated) the MMU's work
is hypercalls, `PV_MMU_ROWS`, priced on the 1500-cycle hypercall (our estimates; Barham et al.,
"Xen and the Art of Virtualization", SOSP 2003, measure whole benchmarks, not these calls):
* an `mmu_update` of one entry: the hypercall, the entry validated and the per-frame counts
  kept: 2000 cycles;
* a `new_baseptr` of a pinned directory: the hypercall and the CR3 load, as a shadow switch:
  2500 cycles (the first one of a directory validates it whole; not priced apart);
* an `invlpg`: the hypercall and the INVLPG: 1600 cycles.
A page fault is always the guest's own (true: the trap counter's row); a direct write to a
pinned table ("#PF pinned") is one too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class CostProfile:
    name: str
    instruction: float = 1.0  # one instruction executed by the CPU (guest or translated)
    trap: float = 2000.0
    callout: float = 800.0
    hypercall: float = 1500.0
    translate_instruction: float = 600.0
    # the MMU block (shadow paging), by trap counter: see MMU_ROWS
    page_fault_hidden: float = 3000.0
    page_fault_true: float = 4000.0
    ptemod: float = 1000.0  # on top of the hidden fault of the same write
    cr3_switch: float = 2500.0
    # pv's direct paging, by hypercall counter: see PV_MMU_ROWS
    mmu_update: float = 2000.0
    new_baseptr: float = 2500.0
    invlpg_call: float = 1600.0

    def mmu_price(self, counter: str) -> float:
        return float(getattr(self, MMU_ROWS[counter]))

    def pv_mmu_price(self, hypercall: str) -> float:
        return float(getattr(self, PV_MMU_ROWS[hypercall]))


# The monitor's trap counters (RunStats.traps) that are the MMU's work, and their row
MMU_ROWS = {
    "#PF hidden": "page_fault_hidden",
    "#PF true": "page_fault_true",
    "ptemod": "ptemod",
    "mov cr3": "cr3_switch",
    "#PF pinned": "page_fault_true",  # pv: a direct write to a pinned page table
}

# The hypercalls (RunStats.hypercalls) that are pv's MMU work, and their row
PV_MMU_ROWS = {"mmu_update": "mmu_update", "new_baseptr": "new_baseptr", "invlpg": "invlpg_call"}


PENTIUM4 = CostProfile("pentium4-asplos06")
PROFILES = {PENTIUM4.name: PENTIUM4}


@dataclass(frozen=True)
class CycleCount:
    virtual: float  # what the run cost under its monitor
    native_equivalent: float  # the same guest instructions on bare metal
    mmu: float = 0.0  # of `virtual`: the MMU block's rows

    @property
    def mmu_share_pct(self) -> float:
        """The MMU's part of the overhead (of what the run cost above bare metal)."""
        above = self.virtual - self.native_equivalent
        return 100.0 * self.mmu / above if above > 0 else 0.0

    @property
    def overhead_pct(self) -> float:
        if not self.native_equivalent:
            return 0.0
        return 100.0 * (self.virtual - self.native_equivalent) / self.native_equivalent


def cycles(
    profile: CostProfile,
    *,
    guest_instructions: int,
    cpu_instructions: int,
    traps: int = 0,
    callouts: int = 0,
    hypercalls: int = 0,
    translated: int = 0,
    mmu: Mapping[str, int] | None = None,
    pv_mmu: Mapping[str, int] | None = None,
) -> CycleCount:
    """Price a run (or a prefix of one) from its counters; `mmu`: the MMU's trap counters
    (MMU_ROWS), not among `traps`; `pv_mmu`: its hypercalls (PV_MMU_ROWS), not among
    `hypercalls`."""
    mmu_cycles = sum(n * profile.mmu_price(name) for name, n in (mmu or {}).items())
    mmu_cycles += sum(n * profile.pv_mmu_price(name) for name, n in (pv_mmu or {}).items())
    virtual = (
        cpu_instructions * profile.instruction
        + traps * profile.trap
        + callouts * profile.callout
        + hypercalls * profile.hypercall
        + translated * profile.translate_instruction
        + mmu_cycles
    )
    return CycleCount(virtual, guest_instructions * profile.instruction, mmu_cycles)
