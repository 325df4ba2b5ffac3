"""The local APIC and the I/O APIC: a test kernel (tests/guests/apic.asm) that checks every
documented register behaviour under each mode and, where QEMU is installed, prints what it
prints under QEMU; and the device models' corners a guest cannot easily reach."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor.devices.ioapic import IoApic
from hypervisor.devices.lapic import BASE_ENABLE, LAPIC_BASE, LocalApic
from hypervisor.devices.lapictimer import ApicTimer
from hypervisor.encap import vmfile
from hypervisor.encap.state import capture, restore
from hypervisor.guest.image import load_guest
from hypervisor.machine import clock
from hypervisor.session import run_guest
from hypervisor.trace.checkpoints import CheckpointStore
from hypervisor.trace.timetravel import TimeMachine
from hypervisor.vmm.inputs import Input, InputDevice
from hypervisor.vmm.vm import Vm
from tests.conftest import needs_nasm
from tests.test_checkpoints import observed
from tests.test_clock import _under, needs_block

GUESTS = Path(__file__).parent / "guests"
QEMU = shutil.which("qemu-system-i386")
CHECKS = 39


def _build(folder: Path, name: str) -> Path:
    out = folder / f"{name}.bin"
    source = str(GUESTS / f"{name}.asm")
    subprocess.run(["nasm", "-f", "bin", "-i", f"{GUESTS}/", "-o", str(out), source], check=True)
    return out


@pytest.fixture(scope="module")
def kernel(tmp_path_factory) -> Path:
    return _build(tmp_path_factory.mktemp("apic"), "apic")


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_the_apics_answer_through_the_guests_own_page_tables(mode, tmp_path):
    """Where they are and at another linear address: shadow paging (trap, bt, pv's unported
    kernels) takes both mappings to the devices."""
    report = run_guest(load_guest(str(_build(tmp_path, "apic_paging"))), mode)
    assert report.console.count(": pass\n") == 5 and "FAIL" not in report.console
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt", "pv"])
def test_every_apic_check_passes_under_every_mode(kernel, mode):
    report = run_guest(load_guest(str(kernel)), mode, max_insns=5_000_000)
    assert "FAIL" not in report.console
    assert report.console.count(": pass\n") == CHECKS
    assert (report.exit.reason, report.exit.status) == ("debug_exit", 0)


@needs_nasm
@pytest.mark.skipif(QEMU is None, reason="QEMU is not installed")
@pytest.mark.parametrize("name", ["apic", "apic_paging"])
def test_the_apic_checks_print_what_they_print_under_qemu(name, tmp_path):
    kernel = _build(tmp_path, name)
    serial = tmp_path / "serial.txt"
    qemu = [str(QEMU), "-kernel", str(kernel), "-m", "32", "-display", "none", "-no-reboot"]
    qemu += ["-serial", f"file:{serial}", "-device", "isa-debug-exit,iobase=0xf4,iosize=4"]
    assert subprocess.run(qemu, timeout=30, check=False).returncode == 1  # status 0
    report = run_guest(load_guest(str(kernel)), "native", max_insns=5_000_000)
    assert report.console == serial.read_text()


def _apic() -> tuple[LocalApic, list[int]]:
    eois: list[int] = []
    return LocalApic(on_eoi=eois.append), eois


def test_the_apic_base_msr_keeps_its_base_and_a_global_disable_resets_the_apic():
    apic, _ = _apic()
    assert apic.apic_base == 0xFEE00900  # enabled, BSP
    apic.write(0x80, 4, 0x40)  # TPR
    apic.apic_base = 0x12345000  # a move (ignored) and a global disable
    assert apic.apic_base == LAPIC_BASE | 0x100
    assert apic.read(0x30, 4) == 0xFFFFFFFF  # its page is open bus while off
    apic.apic_base = LAPIC_BASE | BASE_ENABLE
    assert apic.read(0x80, 4) == 0  # back in the hardware's reset state
    assert apic.read(0xF0, 4) == 0xFF  # software-disabled
    assert apic.read(0x350, 4) == 0x10000  # LINT0 masked: the 8259 passes only while off
    assert apic.pic_passes


def test_errors_gather_until_an_esr_write_latches_them_and_raise_the_error_lvt():
    apic, _ = _apic()
    apic.write(0x370, 4, 0xFE)  # LVT error: vector 0xFE, unmasked
    apic.write(0x300, 4, 1 << 18 | 0x05)  # a self-IPI with an illegal vector
    assert apic.read(0x280, 4) == 0  # not yet latched
    apic.write(0x280, 4, 0)
    assert apic.read(0x280, 4) == 0x20  # send illegal vector
    assert apic.pending_vector() == 0xFE


def test_ipis_to_no_one_change_nothing():
    apic, _ = _apic()
    for icr in (3 << 18 | 0x40, 0x4500, 0x4600 | 0x10, 0x40):  # others, INIT, SIPI, APIC 0
        apic.write(0x310, 4, 0x01000000 if icr == 0x40 else 0)  # ID 1: not us
        apic.write(0x300, 4, icr)
    assert apic.irr == 0


def test_a_level_interrupt_is_not_resent_until_the_eoi_broadcast_clears_remote_irr():
    apic, _ = _apic()
    ioapic = IoApic(apic)
    apic.on_eoi = ioapic.eoi
    ioapic.write(0, 4, 0x14)  # pin 2, low half
    ioapic.write(0x10, 4, 0x8000 | 0x41)  # level, vector 0x41, unmasked
    ioapic.pulse(2)
    assert apic.acknowledge() == 0x41
    ioapic.pulse(2)  # remote IRR set: held
    assert apic.irr == 0
    apic.write(0xB0, 4, 0)  # EOI: a level vector (TMR set) is broadcast
    assert not ioapic.view()[2].remote_irr
    ioapic.pulse(2)
    assert apic.pending_vector() == 0x41


def test_the_timer_counts_the_1_ghz_bus_on_the_instruction_clock():
    timer = ApicTimer()
    timer.set_divide(0xB)  # by 1
    timer.load(1_000_000, periodic=True)  # 1 ms: 1193.182 instructions
    assert timer.ticks_until_expiry() == 1194
    assert not timer.advance(1193)
    assert timer.advance(1)
    assert timer.ticks_until_expiry() == 1193  # the second at 2386.4 instructions
    assert timer.current() == 1_000_000 - (1194 * 10**9 // 1_193_182 - 1_000_000)


def test_each_vm_has_its_own_apics():
    one, two = Vm(load_guest("hello")), Vm(load_guest("hello"))
    assert one.lapic is not two.lapic and one.ioapic is not two.ioapic


@pytest.mark.parametrize("mode", ["native", "bt"])
def test_seeking_back_through_the_apic_timer_lands_where_a_straight_run_does(mode):
    """The APIC shell after it routed its interrupts: timer interrupts every 11,932 steps."""
    machine = TimeMachine(load_guest("apicsh"), mode, checkpoints=CheckpointStore(interval=2000))
    machine.extend(40_000)
    for target in (39_000, 25_000, 33_333):
        machine.seek(target)
        vm = Vm(load_guest("apicsh"), mode)
        vm.run(target)
        assert observed(machine.vm) == observed(vm)
        assert _apics(machine.vm) == _apics(vm)


def _apics(vm: Vm) -> tuple:
    return vm.lapic.view(), vm.lapic.timer, vm.ioapic.table, vm.irqs.view()


@needs_block
@pytest.mark.parametrize("mode", ["native", "trap"])
def test_the_apic_shell_runs_the_same_under_both_clocks(mode, monkeypatch):
    """APIC timer interrupts, IPIs and stepped-over stores land at the same steps whether
    the CPU counts each instruction or each block."""
    typed = (Input(InputDevice.KEYBOARD, "ticks\n"), Input(InputDevice.SERIAL, "exit\n"))
    reports = []
    try:
        for kind in ("count", "block"):
            _under(monkeypatch, kind)
            report = run_guest("apicsh", mode, keep_events=True, inputs=typed)
            reports.append((report.as_json(), report.events))
    finally:
        monkeypatch.undo()
        clock.choice.cache_clear()
    assert reports[0] == reports[1]


@pytest.mark.parametrize("mode", ["native", "trap"])
def test_a_suspended_vm_resumes_with_its_apics(mode):
    """Suspended (to a .vmlab's bytes) with the APIC timer counting and the pins routed:
    the resumed VM, in the same mode or another, goes on as the uninterrupted run does."""
    straight = Vm(load_guest("apicsh"))
    straight.run(50_000)
    first = Vm(load_guest("apicsh"))
    first.run(30_000)
    suspended = vmfile.from_bytes(vmfile.to_bytes(capture(first)))
    resumed = restore(suspended, mode)
    assert _apics(resumed) == _apics(first)
    resumed.run(20_000)
    assert (resumed.step, bytes(resumed.console)) == (straight.step, bytes(straight.console))
    assert _apics(resumed) == _apics(straight)


@pytest.mark.parametrize("mode", ["native", "trap"])
def test_a_traced_recording_through_the_apics_has_one_instruction_per_step(mode):
    """Under the block clock the first APIC access of a run stops before the instruction
    and runs it again once the pages are mapped: the tracer must not count it twice."""
    machine = TimeMachine(load_guest("apicsh"), mode)
    machine.extend(30_000)
    assert machine.recording.aligned and len(machine.recording) == 30_000
