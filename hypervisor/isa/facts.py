"""What each x86 instruction means to a virtual machine monitor, as data with reasons.

Popek and Goldberg (1974): a machine can be virtualized by trap-and-emulate when every
*sensitive* instruction (one that reads or changes machine state the monitor must own, or
whose behaviour depends on it) is also *privileged* (traps when run outside the most
privileged mode). 32-bit x86 breaks the rule: the tables below say which instructions trap at
CPL > 0, which trap only when CPL > IOPL, and which are sensitive but run without trapping —
the holes that binary translation (VMware) and paravirtualization (Xen) were invented to close.

Everything here is plain Python on mnemonics and register names, so the monitor, the
translator, the UI and the tests can all share the same tables without touching capstone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Category(StrEnum):
    """How an instruction behaves in a deprivileged guest kernel (real CPL 1)."""

    PRIVILEGED = "privileged"  # #GP at CPL > 0: the monitor always gets control
    IOPL = "iopl"  # #GP only when CPL > IOPL; the monitor runs guests with IOPL 0
    SENSITIVE = "sensitive"  # sensitive, yet usually runs without trapping: a hole
    INNOCUOUS = "innocuous"  # same result at any CPL: safe to run directly


class FlowKind(StrEnum):
    """How an instruction changes EIP; the translator ends a block at anything but NONE."""

    NONE = "none"
    JMP = "jmp"  # direct near jump: target known at translation time
    JCC = "jcc"  # conditional direct near jump
    CALL = "call"  # direct near call
    JMP_INDIRECT = "jmp_indirect"  # target in a register or memory: needs a run-time lookup
    CALL_INDIRECT = "call_indirect"
    RET = "ret"  # near return: the target is on the stack, i.e. indirect
    FAR_JMP = "far_jmp"  # loads CS: a privilege transition is possible
    FAR_CALL = "far_call"
    FAR_RET = "far_ret"
    INT = "int"  # INT n, INT3, INTO, INT1: software interrupt through the IDT
    IRET = "iret"
    HLT = "hlt"  # not a jump, but execution does not simply fall through
    LOOP = "loop"  # LOOP/LOOPE/LOOPNE/JECXZ: conditional direct, rel8 encoding only
    SYSENTER = "sysenter"  # fast system call into the kernel (SYSENTER, SYSCALL)
    SYSEXIT = "sysexit"  # fast return to user mode (SYSEXIT, SYSRET)


@dataclass(frozen=True)
class Fact:
    """One row of a classification table."""

    key: str  # table key, e.g. "mov cr", "popf"
    name: str  # what students read, e.g. "POPF/POPFD"
    category: Category
    reason: str  # one line: why the monitor cares
    traps: str  # when it faults at CPL > 0
    iopl_sensitive: bool = False  # faults (#GP) exactly when CPL > IOPL


def _table(category: Category, traps: str, rows: Iterable[tuple[str, str, str]]) -> dict[str, Fact]:
    iopl = category is Category.IOPL
    return {
        key: Fact(key, name, category, reason, traps, iopl_sensitive=iopl)
        for key, name, reason in rows
    }


_ALWAYS = "always at CPL > 0 (#GP)"

#: Instructions that fault with #GP at CPL > 0: trap-and-emulate handles these correctly.
PRIVILEGED: dict[str, Fact] = _table(
    Category.PRIVILEGED,
    _ALWAYS,
    [
        ("hlt", "HLT", "stops the physical CPU: the monitor decides whether the vCPU idles"),
        ("lgdt", "LGDT", "loads the real GDT: the guest would own segmentation for everyone"),
        ("lidt", "LIDT", "loads the real IDT: the guest would own every interrupt and fault"),
        ("lldt", "LLDT", "loads the real LDT register"),
        ("ltr", "LTR", "loads the task register: picks the TSS used for ring-switch stacks"),
        (
            "mov cr",
            "MOV to/from CR0–CR4",
            "control registers steer paging (CR0.PG, CR3) and protection: the guest gets "
            "shadow copies",
        ),
        ("mov dr", "MOV to/from DR0–DR7", "debug registers set breakpoints for the whole CPU"),
        ("lmsw", "LMSW", "writes CR0's low bits (PE, MP, EM, TS)"),
        ("clts", "CLTS", "clears CR0.TS, which the monitor may use for lazy FPU switching"),
        ("invd", "INVD", "drops caches without write-back: would destroy others' data"),
        ("wbinvd", "WBINVD", "writes back and flushes the whole machine's caches"),
        ("invlpg", "INVLPG", "flushes a TLB entry: shadow paging must see every one"),
        ("rdmsr", "RDMSR", "model-specific registers configure the machine itself"),
        ("wrmsr", "WRMSR", "model-specific registers configure the machine (SYSENTER target…)"),
        (
            "rdpmc",
            "RDPMC",
            "performance counters count the whole machine (privileged while CR4.PCE = 0)",
        ),
        ("sysexit", "SYSEXIT", "fast return to user mode: defined only from ring 0"),
        ("sysret", "SYSRET", "fast return to user mode: defined only from ring 0"),
    ],
)

#: I/O and interrupt-flag instructions: #GP only when CPL > IOPL. The monitor runs every
#: guest with IOPL 0, so at CPL 1 and 3 they trap. (Unicorn never checks IOPL for IN/OUT:
#: the monitor intercepts them and applies the rule itself.)
IOPL_SENSITIVE: dict[str, Fact] = _table(
    Category.IOPL,
    "when CPL > IOPL (#GP)",
    [
        ("cli", "CLI", "disables real interrupts: the guest may only disable its virtual IF"),
        ("sti", "STI", "enables real interrupts: the guest may only enable its virtual IF"),
        ("in", "IN", "reads a real I/O port: the monitor routes it to a virtual device"),
        ("out", "OUT", "writes a real I/O port: the monitor routes it to a virtual device"),
        ("ins", "INS", "string input from a real port: routed to a virtual device"),
        ("outs", "OUTS", "string output to a real port: routed to a virtual device"),
    ],
)

#: Robin & Irvine (USENIX Security 2000): sensitive instructions that do NOT trap at CPL > 0.
#: The paper groups them as "sensitive register" (first six rows) and "protection system"
#: instructions. The list is presented as 17 or 18 depending on how PUSH/POP are counted;
#: we keep 18 rows, one per mnemonic the paper names (PUSH and POP of segment registers
#: separately, PUSHF and POPF separately).
SENSITIVE_UNPRIVILEGED: dict[str, Fact] = _table(
    Category.SENSITIVE,
    "never (runs silently wrong)",
    [
        ("sgdt", "SGDT", "reveals the monitor's real GDT base, not the guest's (the 'red pill')"),
        ("sidt", "SIDT", "reveals the monitor's real IDT base, not the guest's (the 'red pill')"),
        ("sldt", "SLDT", "reveals the real LDT selector, not the guest's"),
        ("smsw", "SMSW", "reads the real CR0 low bits: the guest sees PE/TS, not its virtual CR0"),
        ("pushf", "PUSHF/PUSHFD", "pushes the real EFLAGS: the guest sees the real IF and IOPL"),
        (
            "popf",
            "POPF/POPFD",
            "at CPL>0 silently ignores changes to IF (and IOPL): the guest believes interrupts "
            "are off, the monitor never hears of it",
        ),
        ("lar", "LAR", "reads access rights from the real tables, checked against the real CPL"),
        ("lsl", "LSL", "reads a limit from the real tables, checked against the real CPL"),
        ("verr", "VERR", "checks readability against the real CPL: DPL 0 segments look closed"),
        ("verw", "VERW", "checks writability against the real CPL: DPL 0 segments look closed"),
        (
            "pop sreg",
            "POP sreg",
            "selector loads are checked against the real CPL: a deprivileged kernel's ring-0 "
            "selectors are refused",
        ),
        ("push sreg", "PUSH sreg", "push cs/ss reveals the real RPL (ring compression shows)"),
        (
            "call far",
            "CALL far",
            "privilege checks and the pushed CS use the real CPL, not the guest's",
        ),
        ("jmp far", "JMP far", "checked against the real CPL: the guest's ring-0 CS is refused"),
        (
            "int",
            "INT n",
            "gate DPL is checked against the real CPL and the pushed CS shows the real RPL",
        ),
        ("ret far", "RET far", "the popped CS's RPL is checked against the real CPL"),
        ("str", "STR", "reveals the real task register: the monitor's TSS, not the guest's"),
        (
            "mov sreg",
            "MOV to/from sreg",
            "mov r, cs reveals the real RPL (ring compression shows through); loads are checked "
            "against the real CPL",
        ),
    ],
)

#: IRET is its own case: at CPL > 0 it faults only when returning to a lower CPL (a more
#: privileged ring) or to a descriptor the deprivileged CPU refuses. Returning to the same
#: ring or to user mode works, but then, like POPF, it silently keeps IF and IOPL.
IRET = Fact(
    "iret",
    "IRET/IRETD",
    Category.SENSITIVE,
    "privileged only when returning to a lower CPL; otherwise at CPL>0 it silently keeps "
    "IF and IOPL, like POPF",
    "when returning to a lower CPL (#GP)",
)

#: Not named by Robin & Irvine, but the same mechanism as MOV to a segment register.
LOAD_FAR_POINTER = Fact(
    "lsreg",
    "LDS/LES/LFS/LGS/LSS",
    Category.SENSITIVE,
    "loads a segment register like MOV sreg: checked against the real CPL",
    "never (runs silently wrong)",
)

#: Innocuous instructions worth a word to students (shown instead of a reason).
NOTES: dict[str, str] = {
    "rdtsc": "not privileged by default (CR4.TSD = 0): reads real time on hardware; vmlab "
    "answers from its instruction clock, so runs stay deterministic",
    "rdtscp": "not privileged by default (CR4.TSD = 0), like RDTSC",
    "cpuid": "unprivileged and, before VT-x, never trapped: shows the host CPU's identity "
    "(vmlab answers a fixed model)",
    "swapgs": "64-bit only: raises #UD in 32-bit mode (capstone still decodes it)",
    "syscall": "AMD's fast system call; on Intel CPUs it raises #UD in 32-bit mode",
    "sysenter": "fast system call: enters the ring-0 target the (trapped) WRMSR configured",
    "ud2": "defined to raise #UD: the same at every CPL",
    "ud0": "defined to raise #UD: the same at every CPL",
    "ud1": "defined to raise #UD: the same at every CPL",
}

#: The classic register names capstone uses for segment registers.
SEGMENT_REGISTERS = frozenset({"cs", "ds", "ss", "es", "fs", "gs"})

JCC_MNEMONICS = frozenset(
    {"jo", "jno", "jb", "jae", "je", "jne", "jbe", "ja"}
    | {"js", "jns", "jp", "jnp", "jl", "jge", "jle", "jg"}
)
LOOP_MNEMONICS = frozenset({"loop", "loope", "loopne", "jecxz", "jcxz"})

#: Fixed vectors of the one-byte software interrupts (INT n carries its own).
INT_VECTORS: dict[str, int] = {"int1": 1, "int3": 3, "into": 4}

_FLOW_BY_MNEMONIC: dict[str, FlowKind] = {
    "ljmp": FlowKind.FAR_JMP,
    "lcall": FlowKind.FAR_CALL,
    "ret": FlowKind.RET,
    "retf": FlowKind.FAR_RET,
    "iret": FlowKind.IRET,
    "iretd": FlowKind.IRET,
    "int": FlowKind.INT,
    "int1": FlowKind.INT,
    "int3": FlowKind.INT,
    "into": FlowKind.INT,
    "hlt": FlowKind.HLT,
    "sysenter": FlowKind.SYSENTER,
    "syscall": FlowKind.SYSENTER,
    "sysexit": FlowKind.SYSEXIT,
    "sysret": FlowKind.SYSEXIT,
    **dict.fromkeys(JCC_MNEMONICS, FlowKind.JCC),
    **dict.fromkeys(LOOP_MNEMONICS, FlowKind.LOOP),
}

# Mnemonic spellings (capstone's) that map to one table key.
_ALIASES: dict[str, str] = {
    "pushfd": "pushf",
    "popfd": "popf",
    "insb": "ins",
    "insw": "ins",
    "insd": "ins",
    "outsb": "outs",
    "outsw": "outs",
    "outsd": "outs",
}
_FLOW_FACTS: dict[FlowKind, Fact] = {
    FlowKind.FAR_JMP: SENSITIVE_UNPRIVILEGED["jmp far"],
    FlowKind.FAR_CALL: SENSITIVE_UNPRIVILEGED["call far"],
    FlowKind.FAR_RET: SENSITIVE_UNPRIVILEGED["ret far"],
    FlowKind.INT: SENSITIVE_UNPRIVILEGED["int"],
    FlowKind.IRET: IRET,
}
_BY_MNEMONIC: dict[str, Fact] = {**PRIVILEGED, **IOPL_SENSITIVE, **SENSITIVE_UNPRIVILEGED}
_BY_MNEMONIC.update(dict.fromkeys(("lds", "les", "lfs", "lgs", "lss"), LOAD_FAR_POINTER))


def base_mnemonic(mnemonic: str) -> str:
    """Drop prefix words capstone prints in the mnemonic ("rep outsb" -> "outsb")."""
    return mnemonic.rsplit(" ", 1)[-1]


def flow_kind(mnemonic: str, *, far: bool = False, indirect: bool = False) -> FlowKind:
    """Control-flow kind of an instruction.

    `far`: the instruction loads CS (needed because capstone 5 prints the m16:32 forms of
    far JMP/CALL as plain "jmp"/"call"). `indirect`: the target is not an immediate.
    """
    base = base_mnemonic(mnemonic)
    if base in ("jmp", "call"):
        if far:
            return FlowKind.FAR_JMP if base == "jmp" else FlowKind.FAR_CALL
        if indirect:
            return FlowKind.JMP_INDIRECT if base == "jmp" else FlowKind.CALL_INDIRECT
        return FlowKind.JMP if base == "jmp" else FlowKind.CALL
    return _FLOW_BY_MNEMONIC.get(base, FlowKind.NONE)


def classify(
    mnemonic: str, registers: Iterable[str] = (), flow: FlowKind | None = None
) -> Fact | None:
    """The table row for an instruction, or None if it is innocuous.

    `registers` are the register operands' names (capstone spelling): MOV, PUSH and POP are
    only sensitive with control, debug or segment registers. `flow` defaults to
    `flow_kind(mnemonic)`; pass the decoder's value so far JMP/CALL through memory count.
    """
    base = base_mnemonic(mnemonic)
    if flow is None:
        flow = flow_kind(base)
    if flow in _FLOW_FACTS:
        return _FLOW_FACTS[flow]
    if base in ("mov", "push", "pop"):
        regs = set(registers)
        if base == "mov" and any(r[:2] == "cr" for r in regs):
            return PRIVILEGED["mov cr"]
        if base == "mov" and any(r[:2] == "dr" for r in regs):
            return PRIVILEGED["mov dr"]
        if regs & SEGMENT_REGISTERS:
            return SENSITIVE_UNPRIVILEGED[f"{base} sreg"]
        return None
    return _BY_MNEMONIC.get(_ALIASES.get(base, base))
