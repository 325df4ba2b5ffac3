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
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostProfile:
    name: str
    instruction: float = 1.0  # one instruction executed by the CPU (guest or translated)
    trap: float = 2000.0
    callout: float = 800.0
    hypercall: float = 1500.0
    translate_instruction: float = 600.0


PENTIUM4 = CostProfile("pentium4-asplos06")
PROFILES = {PENTIUM4.name: PENTIUM4}


@dataclass(frozen=True)
class CycleCount:
    virtual: float  # what the run cost under its monitor
    native_equivalent: float  # the same guest instructions on bare metal

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
) -> CycleCount:
    """Price a run (or a prefix of one) from its counters."""
    virtual = (
        cpu_instructions * profile.instruction
        + traps * profile.trap
        + callouts * profile.callout
        + hypercalls * profile.hypercall
        + translated * profile.translate_instruction
    )
    return CycleCount(virtual, guest_instructions * profile.instruction)
