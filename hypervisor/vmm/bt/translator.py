"""The binary translator: one guest kernel block in, real x86 code for the TC out.

A block runs from a guest EIP to the first control transfer, the first instruction that
needs the monitor, 12 instructions, or the end of the page (Adams & Agesen's translation
unit). Each guest instruction gets one of three treatments:

* **ident** — copied byte for byte: it behaves the same at CPL 1 as at CPL 0;
* **rewritten** — replaced by a short sequence on the vCPU area that gives the guest what
  bare metal would (CLI, STI, PUSHF, POPF, MOV from CS/SS, PUSH CS/SS, SMSW, STR, SLDT,
  SGDT, SIDT) or that keeps control inside the TC (direct branches, calls, returns); a REP
  string instruction runs round by round in a fragment of its own, each round counted as the
  CPU counts it (a run may stop between two);
* **callout** — the block ends with a jump to the monitor, which emulates the instruction
  in Python (LGDT, IRETD, HLT, MOV CR, INT n, far transfers, LAR/LSL/VERR/VERW…).

Inline sequences never change the arithmetic flags the guest can see, at any guest
instruction boundary (a run may stop at any of them, or an interrupt arrive there): they use
MOV, LEA and JECXZ, or save the flags with LAHF/SETO and put them back with ADD/SAHF. They
keep the guest's registers (scratch registers are saved in the vCPU area) and never touch the
guest's stack beyond what the guest instruction itself does: the stack may lie outside RAM,
where a store is lost and a load reads all ones.

(Longer than this project's usual module: the rules and the one fragment emitter whose local
stubs, exits and boundaries every rule shares; cut by rule, they would hand the emitter's
internals around.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from hypervisor.isa import Category, FlowKind, Instruction, decode_block
from hypervisor.machine.hostram import PAGE
from hypervisor.vmm.bt import encode as x
from hypervisor.vmm.bt.area import VcpuArea
from hypervisor.vmm.bt.cache import ExitStub, Fragment, FragmentKey, StubKind, TranslationCache

MAX_BLOCK = 12
WINDOW_EXIT = 0xFFFFFFFE  # exit id: IF was enabled while an interrupt waits
LOOKUP_EXIT = 0xFFFFFFFD  # exit id: an indirect branch needs its target's fragment
_READ_ONLY_MEMORY = frozenset(
    {
        "cmp",
        "test",
        "push",
        "bt",
        "lgdt",
        "lidt",
        "lldt",
        "ltr",
        "verr",
        "verw",
        "lmsw",
        "invlpg",
        "nop",
        "prefetch",
    }
)


def writes_memory(insn: Instruction) -> bool:
    """An explicit store (stack pushes aside: the stack is assumed not to hold code)."""
    ops = insn.operands
    return bool(ops) and ops[0].kind == "mem" and insn.mnemonic not in _READ_ONLY_MEMORY


EFLAGS_IF = 0x200

# Rewritten inline (the rest of the sensitive instructions are callouts).


class Rule(StrEnum):
    """How the translator treats one guest kernel instruction."""

    CALLOUT = "callout"  # the monitor emulates it
    FLOW = "flow"  # a near control transfer kept in the TC
    IDENT = "ident"  # copied as it is
    REPEAT = "repeat"  # a REP string instruction: one round at a time, each paid for
    CLI = "cli"  # the rest: rewritten inline
    STI = "sti"
    PUSHFD = "pushfd"
    POPFD = "popfd"
    SEGMENT_READ = "segment_read"
    TABLE_READ = "table_read"
    DESCRIPTOR_TABLE = "descriptor_table"


_INLINE = {"cli": Rule.CLI, "sti": Rule.STI, "pushfd": Rule.PUSHFD, "popfd": Rule.POPFD}
_TABLE_READS = {"smsw": "vcr0", "str": "vtr", "sldt": "vldtr"}
_SEGMENT_READS = {"cs": "vcs", "ss": "vss"}


@dataclass
class Shared:
    """Code every fragment jumps to, placed at the start of the TC."""

    window_exit: int  # to the door: deliver the waiting interrupt now
    lookup_exit: int  # to the door: find the fragment for [target]


class Translator:
    def __init__(
        self,
        cache: TranslationCache,
        area: VcpuArea,
        door: int,
        read: Callable[[int, int], bytes],
        ram_size: int = 1 << 32,
    ) -> None:
        """`read`: guest code at guest-virtual addresses, through the guest's page tables
        (fewer bytes where a page is not mapped). `ram_size`: accesses to fixed addresses
        below it never reach open bus."""
        self.cache = cache
        self.ram_size = ram_size
        self.area = area
        self.door = door
        self.read = read
        self.shared = self._emit_shared()
        self.pending_code: list[tuple[int, bytes]] = []  # (address, bytes) for the monitor
        self.aliased_stores: dict[int, int] = {}  # guest EIP -> alias address - data address

    # ------------------------------------------------------------------ shared stubs
    def _emit_shared(self) -> Shared:
        start = self.cache.reserve(0)
        code = bytearray()
        window_exit = start
        code += self.door_jump(WINDOW_EXIT, window_exit)
        lookup_exit = start + len(code)
        code += self.door_jump(LOOKUP_EXIT, lookup_exit)
        self.cache.reserve(len(code))
        self.shared_code = (start, bytes(code))
        return Shared(window_exit, lookup_exit)

    def door_jump(self, exit_id: int, at: int) -> bytes:
        store = x.mov_abs_imm32(self.area.exit, exit_id)
        return store + x.jmp_rel32(at + len(store), self.door)

    # ------------------------------------------------------------------ blocks
    def block(
        self, guest_eip: int, self_checked: bool = False, limit: int = MAX_BLOCK
    ) -> tuple[list[Instruction], Instruction | None]:
        """The guest instructions of the block at `guest_eip`: (run in the TC, callout).

        On a self-checked page a block also ends after each store, so that the next
        fragment's check sees whatever the store changed."""
        page_end = (guest_eip | (PAGE - 1)) + 1
        code = self.read(guest_eip, page_end - guest_eip + 15)
        body: list[Instruction] = []
        for insn in decode_block(code, guest_eip, limit, stop_at_flow=False):
            if insn.address >= page_end:
                break
            if needs_callout(insn):
                return body, insn
            if repeats(insn) and body:  # in a fragment of its own: it counts its rounds
                break
            body.append(insn)
            if insn.flow is not FlowKind.NONE or insn.address + insn.size > page_end:
                break
            if repeats(insn) or (self_checked and writes_memory(insn)):
                break
        return body, None

    def translate(
        self,
        guest_eip: int,
        self_checked: bool = False,
        stepping: bool = False,
        frames: tuple[int, ...] | None = None,
        paged: bool = False,
    ) -> Fragment | None:
        """Translate the block at `guest_eip` into the cache; None if the cache is full.
        A *stepping* fragment holds one guest instruction, pays for it on entry and is never
        chained: running them, the monitor stops at an exact guest instruction. `frames`:
        the guest-physical frames of its page and of the next one if mapped (default: the
        pages themselves, paging off); `paged`: the guest has paging on."""
        page = guest_eip & ~(PAGE - 1)
        frames = frames or (page, page + PAGE)
        body, callout = self.block(guest_eip, self_checked, 1 if stepping else MAX_BLOCK)
        fid = self.cache.new_fragment_id()
        key = (guest_eip, frames[0], paged)
        emitter = _FragmentEmitter(self, fid, self.cache.cursor, stepping, key)
        checked = None
        if self_checked:
            last = (callout or body[-1]).next_address if (body or callout) else guest_eip + 1
            checked = self.read(guest_eip, last - guest_eip)
        emitter.emit_block(body, callout, guest_eip, checked)
        if not self.cache.fits(len(emitter.code)):
            return None
        self.cache.reserve(len(emitter.code))
        end = guest_eip if not (body or callout) else (callout or body[-1]).next_address
        if callout is None and not body:  # undecodable at guest_eip: a callout raises #UD
            end = guest_eip + 1
        fragment = Fragment(
            id=fid,
            guest_start=guest_eip,
            guest_end=end,
            insns=tuple(body),
            subkinds=tuple(emitter.subkinds),
            tc_start=emitter.base,
            tc_end=emitter.base + len(emitter.code),
            boundaries=emitter.boundaries,
            instruction_starts=emitter.starts,
            owners=tuple(emitter.owners),
            count_point=emitter.count_point,
            callout=callout,
            source=self.read(guest_eip, max(end - guest_eip, 0)),
            exits=[stub.id for stub in emitter.stubs],
            frames=frames[: len(range(page, end, PAGE))],
            paged=paged,
            self_checked=self_checked,
            stepping=stepping,
        )
        self.pending_code.append((emitter.base, bytes(emitter.code)))
        return fragment


_STRING_OPCODES = frozenset((*range(0x6C, 0x70), *range(0xA4, 0xA8), *range(0xAA, 0xB0)))
_REP_PREFIXES = frozenset((0xF2, 0xF3))
_LEGACY_PREFIXES = frozenset((0xF0, 0xF2, 0xF3, 0x26, 0x2E, 0x36, 0x3E, 0x64, 0x65, 0x66, 0x67))


def repeats(insn: Instruction) -> bool:
    """A string instruction with a REP prefix, on 32-bit addresses (ECX, ESI, EDI)."""
    *prefixes, opcode = insn.bytes
    return (
        opcode in _STRING_OPCODES
        and all(b in _LEGACY_PREFIXES for b in prefixes)
        and not _REP_PREFIXES.isdisjoint(prefixes)
        and insn.address_size == 4
    )


def rule_for(insn: Instruction) -> Rule:
    """How the translator treats one guest kernel instruction."""
    if insn.flow in (
        FlowKind.INT,
        FlowKind.IRET,
        FlowKind.HLT,
        FlowKind.FAR_JMP,
        FlowKind.FAR_CALL,
        FlowKind.FAR_RET,
        FlowKind.SYSENTER,
        FlowKind.SYSEXIT,
    ):
        return Rule.CALLOUT
    if insn.flow is not FlowKind.NONE:
        return Rule.FLOW
    if insn.mnemonic in ("rdtsc", "rdtscp"):  # the TSC at this very instruction: the TC
        return Rule.CALLOUT  # counts guest instructions per fragment, not one by one
    if repeats(insn):
        return Rule.REPEAT
    if insn.category is Category.INNOCUOUS:
        return Rule.IDENT
    if insn.mnemonic in _INLINE:  # 16-bit: emulated
        return _INLINE[insn.mnemonic] if insn.operand_size == 4 else Rule.CALLOUT
    if insn.iopl_sensitive:
        return Rule.IDENT  # port I/O: intercepted on the way by the machine's I/O hook
    return _inline_rule(insn) or Rule.CALLOUT


def absolute_store(insn: Instruction) -> int | None:
    """The address of a store to a fixed address (no base, no index), else None."""
    op = insn.operands[0] if insn.operands else None
    if op is None or not writes_memory(insn) or op.kind != "mem" or op.base or op.index:
        return None
    return op.disp & 0xFFFFFFFF


def retarget_absolute(insn: Instruction, delta: int) -> bytes:
    """The same store, to its address + delta (its disp32, found once in the encoding)."""
    target = absolute_store(insn)
    assert target is not None
    old = target.to_bytes(4, "little")
    assert insn.bytes.count(old) == 1, f"ambiguous displacement in {insn.text}"
    return insn.bytes.replace(old, ((target + delta) & 0xFFFFFFFF).to_bytes(4, "little"))


_STACK = frozenset(
    {"push", "pop", "pushfd", "popfd", "pushal", "popal", "call", "ret", "enter", "leave"}
)


def may_reach_open_bus(insn: Instruction, ram_size: int) -> bool:
    """A data access, explicit or through the stack, that may land outside RAM (LEA and NOP
    name memory but touch none; a fixed address in RAM is always RAM)."""
    if insn.mnemonic in ("lea", "nop"):
        return False
    return insn.mnemonic in _STACK or any(
        op.kind == "mem" and (op.base or op.index or not 0 <= op.disp < ram_size - 8)
        for op in insn.operands
    )


def needs_callout(insn: Instruction) -> bool:
    return rule_for(insn) is Rule.CALLOUT


def _inline_rule(insn: Instruction) -> Rule | None:
    """Which inline rewrite applies to a sensitive instruction, if any."""
    ops = insn.operands
    key = insn.fact_key
    if key in ("mov sreg", "push sreg", "pop sreg"):
        segment = next((op.reg for op in ops if op.reg in x.SEGMENT_PREFIX), None)
        loads = insn.mnemonic == "pop" or (insn.mnemonic == "mov" and ops[0].reg == segment)
        if loads:  # a load: the shadow GDT makes it right, except SS (RPL must equal CPL)
            return None if segment == "ss" else Rule.IDENT
        if segment not in _SEGMENT_READS:
            return Rule.IDENT  # DS/ES/FS/GS hold exactly what the guest loaded
        if insn.mnemonic == "push" or ops[0].kind == "reg":
            return Rule.SEGMENT_READ
        return None
    if key in _TABLE_READS and ops and ops[0].kind == "reg":
        return Rule.TABLE_READ
    if key in ("sgdt", "sidt") and ops and ops[0].kind == "mem":
        return Rule.DESCRIPTOR_TABLE
    return None


@dataclass
class _LocalStub:
    """Code placed after a fragment's body, reached by the rel32 jumps at `sites`."""

    code: Callable[[int], bytes]  # its bytes, given the address they land at
    sites: list[int]  # offsets in the fragment of the rel32 fields that jump to it
    owner: int  # index of the guest instruction whose translation it finishes


class _FragmentEmitter:
    """Emits one fragment at a known TC address."""

    def __init__(
        self, translator: Translator, fid: int, base: int, stepping: bool, key: FragmentKey
    ) -> None:
        self.t = translator
        self.key = key
        self.stepping = stepping
        self.area = translator.area
        self.fid = fid
        self.base = base
        self.code = bytearray()
        self.boundaries: dict[int, int] = {}
        self.starts: dict[int, int] = {}
        self.owners: list[tuple[int, int]] = []  # (TC address, guest index) where code starts
        self.subkinds: list[str] = []
        self.count_point: int | None = None
        self.stubs: list[ExitStub] = []
        self._exits: list[tuple[ExitStub, int]] = []  # (stub, offset of rel32 site)
        self._locals: list[_LocalStub] = []

    @property
    def here(self) -> int:
        return self.base + len(self.code)

    def emit(self, code: bytes) -> None:
        self.code += code

    def _jump_local(self, opcode: bytes, stub: _LocalStub) -> None:
        """`opcode rel32` (a JCC) to a local stub, placed and patched at the end."""
        self.emit(opcode)
        stub.sites.append(len(self.code))
        self.emit(b"\0\0\0\0")

    def _local(self, code: Callable[[int], bytes]) -> _LocalStub:
        stub = _LocalStub(code, [], len(self.subkinds))
        self._locals.append(stub)
        return stub

    def _to_door(self, exit_id: int) -> _LocalStub:
        """A local stub that leaves for the monitor from the prologue, with the guest's flags
        and EAX put back first."""
        prefix = x.restore_flags(self.area.save_a)
        return self._local(lambda at: prefix + self.t.door_jump(exit_id, at + len(prefix)))

    # ------------------------------------------------------------------ the block
    def emit_block(
        self,
        body: list[Instruction],
        callout: Instruction | None,
        guest_eip: int,
        checked: bytes | None = None,
    ) -> None:
        """`checked`: the guest bytes of the block, for a self-checking fragment."""
        self.boundaries[self.here] = 0
        paid = 0 if body and repeats(body[0]) else len(body)  # (a REP pays round by round)
        self._prologue(guest_eip, checked, paid)
        for index, insn in enumerate(body):
            self.boundaries[self.here] = index
            if may_reach_open_bus(insn, self.t.ram_size):  # then it is named exactly (fact 13):
                # the note goes before the instruction's start (a fault or a stop there finds
                # the instruction, a tracer counts it once)
                self.emit(x.mov_abs_imm32(self.area.geip, insn.address))
                self.boundaries[self.here] = index
            self.starts[self.here] = index
            self.owners.append((self.here, index))
            self.subkinds.append(self._instruction(insn))
        if callout is not None or not body:
            self.boundaries[self.here] = len(body)
            self.owners.append((self.here, len(body)))
            self._exit_to_monitor(StubKind.CALLOUT, callout.address if callout else guest_eip)
        elif body[-1].flow is FlowKind.NONE:  # block cut by size or page: fall through
            self._branch(body[-1].next_address)
        self._emit_stubs()

    def _prologue(self, guest_eip: int, checked: bytes | None, n: int) -> None:
        """What runs before the guest's instructions: the self-check (adaptive BT, on a page
        that is not write-protected: compare the guest bytes with those translated, leave for
        a retranslation if they changed) and the TC's own clock. If what is left of the
        slice's budget of guest instructions does not cover the block's n, leave for the
        monitor here, before any of them ran (it runs the rest of the slice with stepping
        fragments, one instruction each); otherwise spend the n. So translated code never
        overruns its budget: a slice ends at its exact step (a timer's interrupt arrives
        where bare metal takes it, a run stops at its end) with no per-instruction hook.
        The monitor counts guest instructions from the budget it spent.
        The comparisons clobber the flags: LAHF/SETO keep them in EAX (saved first), not on
        the guest's stack, which may be outside RAM, and ADD/SAHF put them back."""
        if checked is None and not n:
            return
        a = self.area
        self.emit(x.save_flags(a.save_a))
        if checked is not None:
            stale = self.t.cache.new_exit(StubKind.STALE, self.fid, guest_eip)
            self.stubs.append(stale)
            leave = self._to_door(stale.id)
            for offset in range(0, len(checked), 4):
                self._compare(guest_eip + offset, checked[offset : offset + 4], leave)
        if n:
            deadline = self.t.cache.new_exit(StubKind.DEADLINE, self.fid, 0)
            self.stubs.append(deadline)
            self.emit(b"\x83" + x.absolute(7, a.budget) + bytes([n]))  # cmp dword [budget], n
            self._jump_local(b"\x0f\x8c", self._to_door(deadline.id))  # jl
            self.emit(b"\x81" + x.absolute(5, a.budget) + x.u32(n))  # sub dword [budget], n
            self.count_point = self.here
        self.emit(x.restore_flags(a.save_a))

    def _compare(self, address: int, chunk: bytes, stale: _LocalStub) -> None:
        """cmp [guest], the bytes translated; jne stale."""
        if len(chunk) == 4:
            self.emit(b"\x81" + x.absolute(7, address) + chunk)
        elif len(chunk) == 2:
            self.emit(b"\x66\x81" + x.absolute(7, address) + chunk)
        else:
            for i, byte in enumerate(chunk):
                self.emit(b"\x80" + x.absolute(7, address + i) + bytes([byte]))
                self._jump_local(b"\x0f\x85", stale)
            return
        self._jump_local(b"\x0f\x85", stale)

    def _instruction(self, insn: Instruction) -> str:
        """Emit one guest instruction."""
        rule = rule_for(insn)
        delta = None if self.key[2] else self.t.aliased_stores.get(insn.address)
        match rule:
            case Rule.IDENT if delta is not None:
                self.emit(retarget_absolute(insn, delta))
            case Rule.IDENT:
                self.emit(insn.bytes)
                return "ident"
            case Rule.FLOW:
                self._control_transfer(insn)
            case Rule.REPEAT:
                self._repeat(insn)
            case Rule.CLI:
                self._cli(insn)
            case Rule.STI:
                self._sti(insn)
            case Rule.PUSHFD:
                self._pushfd(insn)
            case Rule.POPFD:
                self._popfd(insn)
            case Rule.SEGMENT_READ:
                self._segment_read(insn)
            case Rule.TABLE_READ:
                self._table_read(insn)
            case Rule.DESCRIPTOR_TABLE:
                self._descriptor_table(insn)
            case Rule.CALLOUT:
                raise AssertionError(f"{insn.text}: a callout ends the block, it is not emitted")
        return "rewritten"

    def _repeat(self, insn: Instruction) -> None:
        """A REP string instruction, one round at a time, each paid from the budget as it
        begins: the CPU (and unicorn's count) takes each round for an instruction, the
        last finding ECX at 0 (or REPE/REPNE's condition met), and a run or an interrupt
        may come between two rounds. The round is the instruction without its REP prefix,
        then ECX - 1 by LEA, which keeps the flags. The guest instruction starts after the
        payment, so a tracer counts only rounds that run; from the loop's top an empty
        budget leaves for the monitor, the guest parked at the REP, between two rounds."""
        a = self.area
        index = len(self.subkinds)
        top = self.here
        del self.starts[top]
        deadline = self.t.cache.new_exit(StubKind.DEADLINE, self.fid, index)
        self.stubs.append(deadline)
        self.emit(x.save_flags(a.save_a))
        self.emit(b"\x83" + x.absolute(7, a.budget) + b"\x01")  # cmp dword [budget], 1
        self._jump_local(b"\x0f\x8c", self._to_door(deadline.id))  # jl
        self.emit(b"\x83" + x.absolute(5, a.budget) + b"\x01")  # sub dword [budget], 1
        self.count_point = self.here
        self.emit(x.restore_flags(a.save_a))
        self.starts[self.here] = self.boundaries[self.here] = index
        *prefixes, opcode = insn.bytes
        once = bytes(b for b in prefixes if b not in _REP_PREFIXES) + bytes([opcode])
        tail = once + b"\x8d\x49\xff"  # lea ecx, [ecx - 1]
        if insn.mnemonic[:4] in ("cmps", "scas"):  # REPE ends on ZF 0, REPNE on ZF 1
            tail += bytes([0x75 if 0xF3 in prefixes else 0x74, 2])  # over the jump back
        self.emit(bytes([0xE3, len(tail) + 2]))  # jecxz: no round left, the REP ends
        back = top - (self.here + len(tail) + 2)
        assert back >= -128, "a round fits a short jump"
        self.emit(tail + bytes([0xEB, back & 0xFF]))  # jmp top

    def _cli(self, insn: Instruction) -> None:
        self.emit(x.mov_abs_imm32(self.area.vif, 0))

    def _sti(self, insn: Instruction) -> None:
        self.emit(x.mov_abs_imm32(self.area.vif, EFLAGS_IF))
        self._window_check(insn.next_address)

    # ------------------------------------------------------------------ inline rules
    def _pending_test(self) -> bytes:
        """cmp dword [pending], 0 and the opcode of a JNE rel32 to follow it."""
        return b"\x83" + x.absolute(7, self.area.pending) + b"\x00\x0f\x85"

    def _window(self, next_guest_eip: int) -> _LocalStub:
        """Finish a POPFD and leave through the interrupt window, resuming at
        `next_guest_eip`."""
        resume = b"\x9d" + x.mov_abs_imm32(self.area.resume_geip, next_guest_eip)
        return self._local(
            lambda at: resume + x.jmp_rel32(at + len(resume), self.t.shared.window_exit)
        )

    def _window_check(self, next_guest_eip: int) -> None:
        """After IF may have become 1 with the flags live: leave through the interrupt window
        if an interrupt waits ([pending] set by the monitor). JECXZ tests ECX without
        touching the flags."""
        a = self.area
        leave = (
            x.mov_reg_abs("ecx", a.save_a)
            + x.mov_abs_imm32(a.resume_geip, next_guest_eip)
            + x.JMP_REL32_PLACEHOLDER
        )
        self.emit(x.mov_abs_reg(a.save_a, "ecx") + x.mov_reg_abs("ecx", a.pending))
        self.emit(bytes([0xE3, len(leave)]))  # jecxz: nothing pending, carry on
        site = self.here + len(leave) - x.JMP_REL32_SIZE
        self.emit(leave[: -x.JMP_REL32_SIZE] + x.jmp_rel32(site, self.t.shared.window_exit))
        self.emit(x.mov_reg_abs("ecx", a.save_a))
        self.boundaries[self.here] = len(self.subkinds) + 1

    def _pushfd(self, insn: Instruction) -> None:
        # The real IF is always 1 and the real IOPL 0 while the guest runs: the flags the
        # guest should see are the real ones XOR (vIF ^ IF) XOR vIOPL. The XOR clobbers the
        # arithmetic flags, so they are kept in EAX meanwhile (LAHF/SETO) and put back.
        a = self.area
        self.emit(
            b"\x9c"  # the guest's own PUSHFD
            + x.save_flags(a.save_a)
            + x.mov_abs_reg(a.save_b, "eax")
            + x.mov_reg_abs("eax", a.vif)
            + b"\x0b"
            + x.absolute(0, a.viopl)  # or eax, [vIOPL]
            + b"\x35"
            + x.u32(EFLAGS_IF)  # xor eax, IF
            + b"\x31\x04\x24"  # xor [esp], eax
            + x.mov_reg_abs("eax", a.save_b)
            + x.restore_flags(a.save_a)
        )

    def _popfd(self, insn: Instruction) -> None:
        # IF and IOPL go to the vCPU area; the real POPF then takes the arithmetic flags (at
        # CPL 1 it silently keeps the real IF and IOPL: here that is exactly what we want).
        # The flags are about to be replaced, so the window check is a plain CMP before it.
        a = self.area
        self.emit(
            x.mov_abs_reg(a.save_a, "eax")
            + b"\x8b\x04\x24"  # mov eax, [esp]
            + b"\x25"
            + x.u32(EFLAGS_IF)  # and eax, IF
            + x.mov_abs_reg(a.vif, "eax")
            + b"\x8b\x04\x24"
            + b"\x25"
            + x.u32(0x3000)  # and eax, IOPL
            + x.mov_abs_reg(a.viopl, "eax")
            + x.mov_reg_abs("eax", a.save_a)
        )
        self._jump_local(self._pending_test(), self._window(insn.next_address))
        self.emit(b"\x9d")  # popfd
        self.boundaries[self.here] = len(self.subkinds) + 1

    def _segment_read(self, insn: Instruction) -> None:
        segment = next(op.reg for op in insn.operands if op.reg in _SEGMENT_READS)
        field = getattr(self.area, _SEGMENT_READS[segment or ""])
        if insn.mnemonic == "push":
            self.emit(x.push_abs(field))
        else:
            self.emit(x.mov_reg_abs(insn.operands[0].reg or "", field))

    def _table_read(self, insn: Instruction) -> None:
        field = getattr(self.area, _TABLE_READS[insn.fact_key or ""])
        self.emit(x.mov_reg_abs(insn.operands[0].reg or "", field))

    def _descriptor_table(self, insn: Instruction) -> None:
        a = self.area
        limit, base = (
            (a.gdtr_limit, a.gdtr_base) if insn.fact_key == "sgdt" else (a.idtr_limit, a.idtr_base)
        )
        op = insn.operands[0]
        # LEA gives the offset only: the stores carry the operand's segment (a per-CPU GS)
        seg = b"" if op.segment in (None, "ds") else bytes([x.SEGMENT_PREFIX[op.segment or ""]])
        self.emit(
            x.mov_abs_reg(a.save_a, "eax")
            + x.mov_abs_reg(a.save_b, "ebx")
            + x.lea("eax", op)
            + x.mov_reg_abs("ebx", limit)
            + seg
            + b"\x66\x89\x18"  # mov [eax], bx
            + x.mov_reg_abs("ebx", base)
            + seg
            + b"\x89\x58\x02"  # mov [eax + 2], ebx
            + x.mov_reg_abs("ebx", a.save_b)
            + x.mov_reg_abs("eax", a.save_a)
        )

    # ------------------------------------------------------------------ control flow
    def _control_transfer(self, insn: Instruction) -> None:
        flow, target, fallthrough = insn.flow, insn.branch_target, insn.next_address
        if flow is FlowKind.JMP:
            self._branch(target or 0)
        elif flow is FlowKind.JCC:
            self._jump_site(lambda at, dest: x.jcc_rel32(insn.mnemonic, at, dest), target or 0)
            self._branch(fallthrough)
        elif flow is FlowKind.LOOP:
            self.emit(bytes([insn.bytes[-2], 0x02]) + b"\xeb\x05")  # loop +2; jmp short +5
            self._branch(target or 0)
            self._branch(fallthrough)
        elif flow is FlowKind.CALL:
            self.emit(x.push_imm32(fallthrough))
            self._branch(target or 0)
        elif flow is FlowKind.RET:
            self.emit(x.pop_abs(self.area.target))
            if insn.operands:  # ret imm16
                self.emit(x.lea_disp("esp", "esp", insn.operands[0].imm or 0))
            self.emit(x.jmp_rel32(self.here, self.t.shared.lookup_exit))
        elif flow in (FlowKind.JMP_INDIRECT, FlowKind.CALL_INDIRECT):
            # the target goes to the vCPU area through a register, not the guest's stack
            op, a = insn.operands[0], self.area
            if op.kind == "reg":
                self.emit(x.mov_abs_reg(a.target, op.reg or ""))
            else:
                self.emit(
                    x.mov_abs_reg(a.save_a, "eax")
                    + x.segment_prefix(op)
                    + b"\x8b"
                    + x.memory(0, op)  # mov eax, r/m32
                    + x.mov_abs_reg(a.target, "eax")
                    + x.mov_reg_abs("eax", a.save_a)
                )
            if flow is FlowKind.CALL_INDIRECT:
                self.emit(x.push_imm32(fallthrough))
            self.emit(x.jmp_rel32(self.here, self.t.shared.lookup_exit))
        else:  # pragma: no cover - every other flow is a callout
            raise AssertionError(f"no translation for {insn.text}")

    def _branch(self, guest_target: int) -> None:
        self._jump_site(x.jmp_rel32, guest_target)

    def _jump_site(self, encoder: Callable[[int, int], bytes], guest_target: int) -> None:
        """A direct jump to the target's fragment if it exists (chained), else to a stub."""
        stub = self.t.cache.new_exit(StubKind.BRANCH, self.fid, guest_target)
        site = self.here
        code = encoder(site, site)  # placeholder target, fixed in _emit_stubs
        stub.patch_at = site + len(code) - 4
        self.emit(code)
        self.stubs.append(stub)
        self._exits.append((stub, stub.patch_at - self.base))

    def _exit_to_monitor(self, kind: StubKind, guest_eip: int) -> None:
        stub = self.t.cache.new_exit(kind, self.fid, guest_eip)
        self.stubs.append(stub)
        self.emit(self.t.door_jump(stub.id, self.here))

    def _emit_stubs(self) -> None:
        for local in self._locals:
            at = self.here
            self.owners.append((at, local.owner))
            self.emit(local.code(at))
            for site in local.sites:
                self.code[site : site + 4] = x.rel32(self.base + site + 4, at)
        cache = self.t.cache
        for stub, offset in self._exits:
            stub_address = self.here
            self.emit(self.t.door_jump(stub.id, stub_address))
            stub.stub_address = stub_address
            target = None if self.stepping else cache.chain_target(self.key, stub.guest_eip)
            dest = target.tc_start if target is not None else stub_address
            if target is not None:
                stub.chained_to = target.id
                target.links_in.add(stub.id)
                cache.stats.chains += 1
            self.code[offset : offset + 4] = x.rel32(self.base + offset + 4, dest)
