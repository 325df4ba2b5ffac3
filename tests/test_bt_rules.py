"""Each translation rule's emitted bytes, disassembled with capstone: what the CPU will run."""

from __future__ import annotations

import pytest

from hypervisor.isa import decode_block
from hypervisor.vmm.bt.area import VcpuArea
from hypervisor.vmm.bt.cache import TranslationCache
from hypervisor.vmm.bt.translator import Translator

GUEST = 0x100000
AREA = VcpuArea(0xFFC12000)
DOOR = 0xFFC13000


SAVE_FLAGS = ["mov dword ptr {save_a}, eax", "lahf", "seto al"]
RESTORE_FLAGS = ["add al, 0x7f", "sahf", "mov eax, dword ptr {save_a}"]


def flag_bracket() -> tuple[list[str], list[str]]:
    save_a = field("save_a")
    return [t.format(save_a=save_a) for t in SAVE_FLAGS], [
        t.format(save_a=save_a) for t in RESTORE_FLAGS
    ]


def translate(code: bytes, self_checked: bool = False) -> tuple[list[str], object]:
    """The fragment's code as text, without the TC's clock: the budget's CMP/JL/SUB of the
    block's instruction count (it runs only if the budget covers the whole block) between a
    save of the flags (LAHF/SETO, not the guest's stack) and their restore."""
    text, fragment = emitted(code, self_checked)
    if not fragment.insns:  # a callout alone: nothing runs in the TC, nothing is counted
        return text, fragment
    save, restore = flag_bracket()
    assert text[:3] == save
    spend = f"dword ptr {field('budget')}, "
    assert text[3].startswith(f"cmp {spend}") and text[4].startswith("jl ")
    assert text[5] == text[3].replace("cmp", "sub", 1)  # the count it checked is the one spent
    assert text[6:9] == restore
    noted = f"mov dword ptr {field('geip')}, "
    return [t for t in text[9:] if not t.startswith(noted)], fragment


@pytest.mark.parametrize(
    ("code", "touches"),
    [
        ("53", True),  # push ebx
        ("8b4304", True),  # mov eax, [ebx + 4]
        ("9c", True),  # pushfd
        ("e810000000", True),  # call: pushes the return address
        ("8d4304", False),  # lea eax, [ebx + 4]
        ("01d8", False),  # add eax, ebx
    ],
)
def test_an_instruction_that_may_touch_memory_notes_its_eip_first(code, touches):
    # an open-bus access by translated code is attributed through it (unicorn fact 13)
    text, _ = emitted(bytes.fromhex(code))
    noted = f"mov dword ptr {field('geip')}, {GUEST:#x}"
    assert (text[9] == noted) is touches


def emitted(code: bytes, self_checked: bool = False) -> tuple[list[str], object]:
    memory = code + b"\x90" * 64
    cache = TranslationCache(0xFFD00000, 1 << 20)
    translator = Translator(cache, AREA, DOOR, lambda a, n: memory[a - GUEST : a - GUEST + n])
    fragment = translator.translate(GUEST, self_checked)
    (address, emitted), *_ = translator.pending_code
    insns = decode_block(emitted, address, 1000, stop_at_flow=False)
    assert sum(i.size for i in insns) == len(emitted), "every emitted byte decodes"
    return [i.text for i in insns], fragment


def field(name: str) -> str:
    return f"[{getattr(AREA, name):#x}]"


def test_cli_becomes_a_store_to_the_virtual_if():
    text, fragment = translate(bytes.fromhex("fa"))  # cli
    assert f"mov dword ptr {field('vif')}, 0" in text
    assert "cli" not in text
    assert fragment.subkinds[0] == "rewritten"


FLAG_WRITERS = {"add", "sub", "and", "or", "xor", "cmp", "test", "inc", "dec"}


def test_sti_with_live_flags_checks_the_interrupt_window_without_touching_them():
    text, _ = translate(bytes.fromhex("fb"))  # sti
    assert text[0] == f"mov dword ptr {field('vif')}, 0x200"
    window = text[: text.index(f"mov dword ptr {field('resume_geip')}, {GUEST + 1:#x}")]
    assert f"mov ecx, dword ptr {field('pending')}" in window
    assert any(t.startswith("jecxz") for t in window)
    assert not any(t.split()[0] in FLAG_WRITERS for t in window)
    assert "sti" not in text


def test_sti_before_flags_are_overwritten_still_keeps_them():
    # a run may stop, or an interrupt arrive, between the STI and the XOR: the flags there
    # are the guest's
    text, _ = translate(bytes.fromhex("fb31c0"))  # sti; xor eax, eax
    window = text[: text.index("xor eax, eax")]
    assert any(t.startswith("jecxz") for t in window)
    assert not any(t.split()[0] in FLAG_WRITERS for t in window)


def test_pushfd_merges_virtual_if_and_iopl_and_keeps_the_flags_off_the_stack():
    for code in ("9c", "9c31c0"):  # pushfd, and pushfd; xor eax, eax
        text, _ = translate(bytes.fromhex(code))
        assert text[0] == "pushfd" and text.count("pushfd") == 1  # the guest's own push
        assert "popfd" not in text
        assert f"mov eax, dword ptr {field('vif')}" in text
        assert f"or eax, dword ptr {field('viopl')}" in text
        assert "xor eax, 0x200" in text
        merged = text.index("xor dword ptr [esp], eax")
        save, restore = flag_bracket()
        assert text[1:4] == save
        assert text[merged + 2 : merged + 5] == restore


def test_popfd_stores_if_and_iopl_then_pops_the_arithmetic_flags():
    text, _ = translate(bytes.fromhex("9d"))  # popfd
    assert f"mov dword ptr {field('vif')}, eax" in text
    assert f"mov dword ptr {field('viopl')}, eax" in text
    popfd = text.index("popfd")
    # the window check runs before the real POPFD replaces the flags it clobbers
    assert text[popfd - 2] == f"cmp dword ptr {field('pending')}, 0"
    assert text[popfd - 1].startswith("jne ")


def test_a_self_checking_fragment_compares_its_bytes_with_the_clock_in_one_bracket():
    text, fragment = emitted(bytes.fromhex("9c"), self_checked=True)
    assert fragment.self_checked
    save, restore = flag_bracket()
    clock = next(i for i, t in enumerate(text) if t.startswith(f"cmp dword ptr {field('budget')}"))
    assert text[:3] == save and text[3] == f"cmp dword ptr [{GUEST:#x}], 0x9090909c"
    assert all(t.startswith(("cmp ", "jne ")) for t in text[3:clock])
    assert text[clock + 2].startswith(f"sub dword ptr {field('budget')}, ")
    assert text[clock + 3 : clock + 6] == restore


@pytest.mark.parametrize(("code", "expected"), [
    ("8cc8", "mov eax, dword ptr {vcs}"),  # mov eax, cs
    ("668cd0", "mov ax, word ptr {vss}"),  # mov ax, ss
    ("0e", "push dword ptr {vcs}"),  # push cs
    ("0f01e0", "mov eax, dword ptr {vcr0}"),  # smsw eax
    ("0f00c8", "mov eax, dword ptr {vtr}"),  # str eax
])  # fmt: skip
def test_reads_of_virtualized_state_come_from_the_vcpu_area(code, expected):
    text, _ = translate(bytes.fromhex(code))
    fields = {k: field(k) for k in ("vcs", "vss", "vcr0", "vtr")}
    assert expected.format(**fields) in text


def test_sgdt_writes_the_guest_gdtr_through_the_original_address():
    text, _ = translate(bytes.fromhex("0f014308"))  # sgdt [ebx + 8]
    assert "lea eax, [ebx + 8]" in text
    assert f"mov ebx, dword ptr {field('gdtr_limit')}" in text
    assert "mov word ptr [eax], bx" in text
    assert "mov dword ptr [eax + 2], ebx" in text


def test_ident_instructions_are_copied_and_direct_jumps_exit_through_a_stub():
    text, fragment = translate(bytes.fromhex("01d8eb10"))  # add eax, ebx; jmp +0x10
    assert text[0] == "add eax, ebx"
    assert fragment.subkinds == ("ident", "rewritten")
    assert f"mov dword ptr {field('exit')}, 1" in text
    assert f"jmp {DOOR:#x}" in text


def test_call_pushes_the_guest_return_address():
    text, _ = translate(bytes.fromhex("e810000000"))  # call +0x10
    assert text[0] == f"push {GUEST + 5:#x}"


def test_ret_pops_the_target_for_a_lookup():
    text, _ = translate(bytes.fromhex("c3"))
    assert text[0] == f"pop dword ptr {field('target')}"


def test_indirect_jump_computes_its_target_with_the_original_operand_off_the_stack():
    text, _ = translate(bytes.fromhex("ff6304"))  # jmp [ebx + 4]
    assert text[:4] == [
        f"mov dword ptr {field('save_a')}, eax",
        "mov eax, dword ptr [ebx + 4]",
        f"mov dword ptr {field('target')}, eax",
        f"mov eax, dword ptr {field('save_a')}",
    ]
    text, _ = translate(bytes.fromhex("ffe3"))  # jmp ebx
    assert text[0] == f"mov dword ptr {field('target')}, ebx"


def test_loop_keeps_its_short_form_and_gets_two_exits():
    text, _ = translate(bytes.fromhex("e2fe"))  # loop $
    assert text[0].startswith("loop ")
    assert text[1].startswith("jmp ")


@pytest.mark.parametrize("code", ["0f0115", "cf", "f4", "0f22d8", "cd80", "0f02c3", "ea0000100008"])
def test_complex_instructions_end_the_block_with_a_callout(code):
    # lgdt [m], iretd, hlt, mov cr3, eax, int 0x80, lar eax, ebx, ljmp
    text, fragment = translate(bytes.fromhex(code) + b"\0" * 4)
    assert fragment.callout is not None and fragment.insns == ()
    assert text == [f"mov dword ptr {field('exit')}, 1", f"jmp {DOOR:#x}"]


def test_port_io_stays_in_the_cache_for_the_io_hook():
    text, fragment = translate(bytes.fromhex("ee"))  # out dx, al
    assert "out dx, al" in text and fragment.subkinds[0] == "ident"
