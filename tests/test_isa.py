"""hypervisor.isa: decoding known x86 byte strings and classifying them for the monitor."""

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.isa import (
    IOPL_SENSITIVE,
    IRET,
    PRIVILEGED,
    SENSITIVE_UNPRIVILEGED,
    Category,
    FlowKind,
    Instruction,
    Operand,
    classify,
    decode,
    decode_block,
)

P, IO, S, OK = Category.PRIVILEGED, Category.IOPL, Category.SENSITIVE, Category.INNOCUOUS


def insn(hexbytes: str, address: int = 0x100000) -> Instruction:
    result = decode(bytes.fromhex(hexbytes), address)
    assert result is not None, hexbytes
    return result


@pytest.mark.parametrize(
    ("code", "text", "category"),
    [
        ("fa", "cli", IO),
        ("fb", "sti", IO),
        ("ee", "out dx, al", IO),
        ("ec", "in al, dx", IO),
        ("e680", "out 0x80, al", IO),
        ("f36e", "rep outsb dx, byte ptr [esi]", IO),
        ("6c", "insb byte ptr es:[edi], dx", IO),
        ("f4", "hlt", P),
        ("0f015308", "lgdt [ebx + 8]", P),
        ("0f011b", "lidt [ebx]", P),
        ("0f00d0", "lldt ax", P),
        ("0f00d8", "ltr ax", P),
        ("0f20c0", "mov eax, cr0", P),
        ("0f22d8", "mov cr3, eax", P),
        ("0f21f8", "mov eax, dr7", P),
        ("0f23c0", "mov dr0, eax", P),
        ("0f01f0", "lmsw ax", P),
        ("0f06", "clts", P),
        ("0f08", "invd", P),
        ("0f09", "wbinvd", P),
        ("0f0138", "invlpg byte ptr [eax]", P),
        ("0f30", "wrmsr", P),
        ("0f32", "rdmsr", P),
        ("0f33", "rdpmc", P),
        ("0f35", "sysexit", P),
        ("9c", "pushfd", S),
        ("9d", "popfd", S),
        ("669c", "pushf", S),
        ("669d", "popf", S),
        ("0f010500100000", "sgdt [0x1000]", S),
        ("0f010d00100000", "sidt [0x1000]", S),  # /1 is SIDT: 0f 01 0d is not SGDT
        ("0f00c0", "sldt eax", S),
        ("0f01e0", "smsw eax", S),
        ("0f00c8", "str eax", S),
        ("0f02c1", "lar eax, ecx", S),
        ("0f03c1", "lsl eax, ecx", S),
        ("0f00e0", "verr ax", S),
        ("0f00e8", "verw ax", S),
        ("8cc8", "mov eax, cs", S),
        ("8ed8", "mov ds, eax", S),
        ("8c18", "mov word ptr [eax], ds", S),
        ("0e", "push cs", S),
        ("16", "push ss", S),
        ("0fa0", "push fs", S),
        ("1f", "pop ds", S),
        ("17", "pop ss", S),
        ("0fa9", "pop gs", S),
        ("c51e", "lds ebx, ptr [esi]", S),
        ("cd80", "int 0x80", S),
        ("cc", "int3", S),
        ("ce", "into", S),
        ("cf", "iretd", S),
        ("ea785634120800", "ljmp 8:0x12345678", S),
        ("9a785634120800", "lcall 8:0x12345678", S),
        ("ff28", "ljmp fword ptr [eax]", S),
        ("ff18", "lcall fword ptr [eax]", S),
        ("cb", "retf", S),
        ("ca0800", "retf 8", S),
        ("90", "nop", OK),
        ("89d8", "mov eax, ebx", OK),
        ("50", "push eax", OK),
        ("58", "pop eax", OK),
        ("0f31", "rdtsc", OK),
        ("0fa2", "cpuid", OK),
        ("0f01f8", "swapgs", OK),  # 64-bit only: #UD here, not a privileged instruction
        ("0f0b", "ud2", OK),
        ("c3", "ret", OK),
        ("ffd0", "call eax", OK),
        ("0f34", "sysenter", OK),
    ],
)
def test_category(code: str, text: str, category: Category) -> None:
    i = insn(code)
    assert i.text == text
    assert i.category == category
    assert i.is_sensitive == (category != OK)
    assert (i.sensitive_reason is not None) == (category != OK)


def test_iopl_flag_marks_exactly_the_io_and_interrupt_flag_class() -> None:
    for code in ("fa", "fb", "ee", "ec", "ed", "6f", "f36c"):
        assert insn(code).iopl_sensitive, code
    for code in ("9d", "f4", "0f20c0", "cf", "90"):
        assert not insn(code).iopl_sensitive, code


def test_every_table_row_has_a_one_line_reason() -> None:
    rows = [*PRIVILEGED.values(), *IOPL_SENSITIVE.values(), *SENSITIVE_UNPRIVILEGED.values()]
    for fact in [*rows, IRET]:
        assert fact.reason and "\n" not in fact.reason, fact.key
        assert fact.traps, fact.key
        assert fact.category != OK


def test_robin_irvine_table() -> None:
    names = {f.name for f in SENSITIVE_UNPRIVILEGED.values()}
    assert len(SENSITIVE_UNPRIVILEGED) == 18
    assert {"SGDT", "SIDT", "SLDT", "SMSW", "STR", "LAR", "LSL", "VERR", "VERW"} <= names
    assert all(f.category == S for f in SENSITIVE_UNPRIVILEGED.values())
    assert "red pill" in insn("0f010500100000").sensitive_reason
    assert "IF" in insn("9d").sensitive_reason
    assert "RPL" in insn("0e").sensitive_reason


def test_iret_is_privileged_only_when_returning_to_a_lower_cpl() -> None:
    i = insn("cf")
    assert i.flow == FlowKind.IRET
    assert "lower CPL" in i.traps
    assert i.sensitive_reason == IRET.reason


def test_rdtsc_is_not_privileged_but_carries_a_note() -> None:
    i = insn("0f31")
    assert i.category == OK
    assert "TSD" in i.note


def test_classify_works_without_capstone() -> None:
    assert classify("mov", ["cr3", "eax"]).key == "mov cr"
    assert classify("mov", ["eax", "ebx"]) is None
    assert classify("push", ["gs"]).category == S
    assert classify("rep outsd").category == IO
    assert classify("nop") is None


@pytest.mark.parametrize(
    ("code", "address", "flow", "target"),
    [
        ("e800000000", 0x1000, FlowKind.CALL, 0x1005),
        ("e8fbffffff", 0x100000, FlowKind.CALL, 0x100000),
        ("e9fbffffff", 0x1000, FlowKind.JMP, 0x1000),
        ("ebfe", 0x2000, FlowKind.JMP, 0x2000),
        ("7410", 0x2000, FlowKind.JCC, 0x2012),
        ("0f84faffffff", 0x3000, FlowKind.JCC, 0x3000),
        ("e2fe", 0x10, FlowKind.LOOP, 0x10),
        ("e1fe", 0x10, FlowKind.LOOP, 0x10),
        ("e0fe", 0x10, FlowKind.LOOP, 0x10),
        ("e3fe", 0x10, FlowKind.LOOP, 0x10),
        ("e910000000", 0xFFFFFFF0, FlowKind.JMP, 0x5),  # wraps at 4 GiB
        ("66e9fdff", 0x12340, FlowKind.JMP, 0x2341),  # 16-bit operand size truncates EIP
        ("ffe0", 0, FlowKind.JMP_INDIRECT, None),
        ("ffd0", 0, FlowKind.CALL_INDIRECT, None),
        ("ff10", 0, FlowKind.CALL_INDIRECT, None),
        ("c3", 0, FlowKind.RET, None),
        ("c20400", 0, FlowKind.RET, None),
        ("cb", 0, FlowKind.FAR_RET, None),
        ("ff28", 0, FlowKind.FAR_JMP, None),
        ("66ff18", 0, FlowKind.FAR_CALL, None),
        ("cd80", 0, FlowKind.INT, None),
        ("cf", 0, FlowKind.IRET, None),
        ("f4", 0, FlowKind.HLT, None),
        ("0f34", 0, FlowKind.SYSENTER, None),
        ("0f35", 0, FlowKind.SYSEXIT, None),
        ("89d8", 0, FlowKind.NONE, None),
        ("0f0b", 0, FlowKind.NONE, None),
    ],
)
def test_control_flow(code: str, address: int, flow: FlowKind, target: int | None) -> None:
    i = insn(code, address)
    assert i.flow == flow
    assert i.branch_target == target
    assert i.ends_block == (flow != FlowKind.NONE)
    if target is not None:
        assert i.text.endswith(hex(target))


def test_conditional_branches() -> None:
    assert insn("7410").is_conditional
    assert insn("e2fe").is_conditional
    assert insn("ce").is_conditional
    assert not insn("ebfe").is_conditional


def test_far_direct_targets() -> None:
    assert insn("ea785634120800").far_target == (0x08, 0x12345678)
    assert insn("9a785634120800").far_target == (0x08, 0x12345678)
    assert insn("66ea34121b00").far_target == (0x1B, 0x1234)
    assert insn("ff28").far_target is None


def test_far_indirect_pointer_sizes() -> None:
    assert insn("ff18").operands[0].size == 6  # m16:32
    assert insn("66ff18").operands[0].size == 4  # m16:16
    assert insn("64ff28").text == "ljmp fword ptr fs:[eax]"
    assert insn("66ff28").text == "ljmp dword ptr [eax]"


def test_interrupt_vectors() -> None:
    assert insn("cd82").vector == 0x82
    assert insn("cc").vector == 3
    assert insn("ce").vector == 4
    assert insn("90").vector is None


def test_memory_operand_of_lgdt() -> None:
    i = insn("0f015308")
    assert i.operands == (Operand("mem", 6, segment="ds", base="ebx", index=None, scale=1, disp=8),)
    assert i.memory_operand is i.operands[0]
    assert str(i.operands[0]) == "ds:[ebx + 0x8]"


def test_memory_operand_of_absolute_store() -> None:
    for code in ("a300100000", "890500100000"):
        i = insn(code)
        assert i.text == "mov dword ptr [0x1000], eax"
        mem, reg = i.operands
        assert (mem.kind, mem.size, mem.segment, mem.base, mem.index, mem.disp) == (
            "mem",
            4,
            "ds",
            None,
            None,
            0x1000,
        )
        assert (reg.kind, reg.reg, reg.size) == ("reg", "eax", 4)


def test_memory_operand_segments_and_sib() -> None:
    mem = insn("648b448b08").operands[1]
    assert (mem.segment, mem.base, mem.index, mem.scale, mem.disp) == ("fs", "ebx", "ecx", 4, 8)
    assert insn("8b45fc").operands[1].segment == "ss"  # default segment of an EBP base
    assert insn("8b45fc").operands[1].disp == -4
    assert insn("8b0424").operands[1].segment == "ss"  # and of an ESP base
    assert insn("a5").operands[0].segment == "es"  # string destination


def test_register_and_immediate_operands() -> None:
    cr = insn("0f22d8")
    assert [(op.kind, op.reg) for op in cr.operands] == [("reg", "cr3"), ("reg", "eax")]
    assert insn("6aff").operands[0].imm == 0xFFFFFFFF  # immediates are unsigned
    assert insn("e680").operands[0] == Operand("imm", 1, imm=0x80)


def test_prefixes_and_sizes() -> None:
    i = insn("669d")
    assert i.operand_size == 2
    assert i.prefixes == (0x66,)
    assert insn("678b07").address_size == 2
    assert insn("9d").operand_size == 4
    assert insn("f36e").mnemonic == "outsb"


@pytest.mark.parametrize("code", ["", "0f", "ff", "66", "ffff", "ffe8", "c4c0", "f0" * 15 + "90"])
def test_garbage_does_not_decode(code: str) -> None:
    assert decode(bytes.fromhex(code), 0) is None


def test_decode_uses_only_the_first_instruction() -> None:
    i = insn("fa90f4")
    assert (i.mnemonic, i.size, i.bytes) == ("cli", 1, b"\xfa")
    assert i.next_address == 0x100001


def test_decode_accepts_buffers_and_caches() -> None:
    code = bytearray.fromhex("0f20c0")
    first = decode(code, 0x1000)
    assert decode(memoryview(code), 0x1000) is first
    assert decode(bytes(code) + b"\x90" * 20, 0x1000) == first
    assert decode(code, 0x2000) is not first


def test_instructions_are_frozen_plain_values() -> None:
    i = insn("0f015308")
    with pytest.raises(dataclasses.FrozenInstanceError):
        i.size = 2  # type: ignore[misc]

    def plain(value: object) -> bool:
        if isinstance(value, tuple):
            return all(plain(v) for v in value)
        if dataclasses.is_dataclass(value):
            return all(plain(getattr(value, f.name)) for f in dataclasses.fields(value))
        return value is None or type(value).__module__ in ("builtins", "hypervisor.isa.facts")

    assert plain(i)


def test_decode_block_stops_at_control_flow() -> None:
    code = bytes.fromhex("fa 9c 89d8 7405 f4 90")
    block = decode_block(code, 0x1000)
    assert [i.mnemonic for i in block] == ["cli", "pushfd", "mov", "je"]
    assert block[-1].branch_target == 0x100B
    assert [i.address for i in block] == [0x1000, 0x1001, 0x1002, 0x1004]
    assert len(decode_block(code, 0x1000, 2)) == 2
    assert len(decode_block(code, 0x1000, 12, stop_at_flow=False)) == 6


def test_decode_block_stops_at_undecodable_or_truncated_bytes() -> None:
    assert [i.mnemonic for i in decode_block(bytes.fromhex("90 90 0f"), 0)] == ["nop", "nop"]
    assert [i.mnemonic for i in decode_block(bytes.fromhex("90 e8 00"), 0)] == ["nop"]
    assert decode_block(b"", 0) == ()


@settings(max_examples=2000, deadline=None)
@given(code=st.binary(max_size=20), address=st.integers(0, 0xFFFFFFFF))
def test_decode_never_raises(code: bytes, address: int) -> None:
    i = decode(code, address)
    if i is not None:
        assert 1 <= i.size <= 15
        assert i.size <= len(code)
        assert i.bytes == code[: i.size]
        assert (i.sensitive_reason is None) == (i.category == Category.INNOCUOUS)
