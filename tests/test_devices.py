"""Device models, tested through their port interface as a guest would drive them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hypervisor.devices import DebugExit, Pic8259Pair, Pit8254, PortDevice, Uart16550

# --- helpers -------------------------------------------------------------------------------


def outb(dev: PortDevice, port: int, value: int) -> None:
    dev.write(port, 1, value)


def inb(dev: PortDevice, port: int) -> int:
    return dev.read(port, 1)


def init_pics(pic: Pic8259Pair, master_base: int = 0x20, slave_base: int = 0x28) -> None:
    """The classic PC remap sequence (Linux, OSDev wiki), leaving every IRQ unmasked."""
    outb(pic, 0x20, 0x11)  # ICW1: init, cascade, ICW4 follows
    outb(pic, 0xA0, 0x11)
    outb(pic, 0x21, master_base)  # ICW2
    outb(pic, 0xA1, slave_base)
    outb(pic, 0x21, 0x04)  # ICW3: slave on IR2
    outb(pic, 0xA1, 0x02)  # ICW3: slave identity 2
    outb(pic, 0x21, 0x01)  # ICW4: 8086 mode
    outb(pic, 0xA1, 0x01)
    outb(pic, 0x21, 0x00)  # OCW1: unmask all
    outb(pic, 0xA1, 0x00)


class Edges:
    """Counts IRQ 0 callbacks from the PIT."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def pit_with(mode: int, reload: int, channel: int = 0) -> tuple[Pit8254, Edges]:
    edges = Edges()
    pit = Pit8254(edges)
    program(pit, channel, mode, reload)
    return pit, edges


def program(pit: Pit8254, channel: int, mode: int, reload: int) -> None:
    outb(pit, 0x43, channel << 6 | 0x30 | mode << 1)  # lobyte/hibyte access
    outb(pit, 0x40 + channel, reload & 0xFF)
    outb(pit, 0x40 + channel, (reload >> 8) & 0xFF)


def read_count(pit: Pit8254, channel: int = 0) -> int:
    lo = inb(pit, 0x40 + channel)
    return lo | inb(pit, 0x40 + channel) << 8


def latch_and_read(pit: Pit8254, channel: int = 0) -> int:
    outb(pit, 0x43, channel << 6)  # counter latch command
    return read_count(pit, channel)


# --- protocol ------------------------------------------------------------------------------


def test_every_device_implements_the_port_protocol() -> None:
    devices = [Uart16550(), Pic8259Pair(), Pit8254(lambda: None), DebugExit(lambda n: None)]
    for dev in devices:
        assert isinstance(dev, PortDevice)
        assert dev.name
    all_ports = [p for dev in devices for p in dev.ports]
    assert len(all_ports) == len(set(all_ports)), "devices must not share ports"


def test_wide_access_is_split_into_consecutive_byte_ports() -> None:
    uart = Uart16550()
    uart.write(0x3FF, 1, 0x5A)  # SCR
    # A 16-bit read at SCR sees SCR, then port 0x400 which is not the UART's: open bus.
    assert uart.read(0x3FF, 2) == 0xFF5A
    # LSR, MSR, SCR, open bus.
    assert uart.read(0x3FD, 4) == 0xFF5AB060
    with pytest.raises(ValueError):
        uart.read(0x3F8, 3)


# --- UART ----------------------------------------------------------------------------------


def test_uart_thr_write_prints_and_calls_back() -> None:
    seen: list[bytes] = []
    uart = Uart16550(on_output=seen.append)
    for byte in b"hi\n":
        outb(uart, 0x3F8, byte)
    assert uart.output == bytearray(b"hi\n")
    assert seen == [b"h", b"i", b"\n"]


def test_uart_is_always_ready_and_has_no_input() -> None:
    uart = Uart16550()
    assert inb(uart, 0x3FD) == 0x60  # LSR: THR empty, transmitter empty
    assert inb(uart, 0x3F8) == 0  # RBR
    assert inb(uart, 0x3FA) == 0x01  # IIR: nothing pending
    assert inb(uart, 0x3FE) == 0xB0  # MSR


def test_uart_registers_read_back_and_dlab_selects_the_divisor() -> None:
    uart = Uart16550(name="COM2", base=0x2F8)
    assert uart.ports == tuple(range(0x2F8, 0x300))
    outb(uart, 0x2F9, 0x03)  # IER
    outb(uart, 0x2FB, 0x80)  # LCR: DLAB on
    outb(uart, 0x2F8, 0x0C)  # DLL: 9600 baud
    outb(uart, 0x2F9, 0x00)  # DLM
    assert inb(uart, 0x2F8) == 0x0C
    assert inb(uart, 0x2F9) == 0x00
    assert uart.output == bytearray()  # a divisor write is not a character
    outb(uart, 0x2FB, 0x03)  # LCR: 8N1, DLAB off
    assert inb(uart, 0x2FB) == 0x03
    assert inb(uart, 0x2F9) == 0x03  # IER is back
    outb(uart, 0x2FC, 0x0B)  # MCR
    outb(uart, 0x2FF, 0xA5)  # SCR
    assert inb(uart, 0x2FC) == 0x0B
    assert inb(uart, 0x2FF) == 0xA5
    outb(uart, 0x2F8, ord("x"))
    assert uart.output == bytearray(b"x")


# --- PIC -----------------------------------------------------------------------------------


def test_pic_power_on_state_is_masked_with_bios_vectors() -> None:
    pic = Pic8259Pair()
    assert pic.vector_base == (0x08, 0x70)
    assert pic.imr == 0xFFFF
    pic.raise_irq(0)
    assert pic.irr == 0x0001  # latched even though masked
    assert pic.pending_vector() is None


def test_pic_init_sequence_sets_vector_bases() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    assert pic.vector_base == (0x20, 0x28)
    assert pic.imr == 0
    outb(pic, 0x21, 0xFB)
    outb(pic, 0xA1, 0xFF)
    assert inb(pic, 0x21) == 0xFB
    assert inb(pic, 0xA1) == 0xFF
    assert pic.imr == 0xFFFB


def test_pic_icw2_ignores_low_bits_and_icw4_is_optional() -> None:
    pic = Pic8259Pair()
    outb(pic, 0x20, 0x13)  # ICW1: single PIC, ICW4 follows: no ICW3
    outb(pic, 0x21, 0x47)
    outb(pic, 0x21, 0x01)  # ICW4
    outb(pic, 0x21, 0xAA)  # now an OCW1
    assert pic.vector_base[0] == 0x40
    assert inb(pic, 0x21) == 0xAA
    outb(pic, 0xA0, 0x10)  # ICW1: cascade, no ICW4
    outb(pic, 0xA1, 0x30)  # ICW2
    outb(pic, 0xA1, 0x02)  # ICW3
    outb(pic, 0xA1, 0x55)  # OCW1
    assert pic.vector_base[1] == 0x30
    assert inb(pic, 0xA1) == 0x55


def test_pic_delivers_and_eoi_allows_the_next() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(1)
    assert pic.pending_vector() == 0x21
    assert pic.pending_vector() == 0x21  # looking does not change anything
    assert pic.acknowledge() == 0x21
    assert pic.isr == 0x0002 and pic.irr == 0
    assert pic.pending_vector() is None
    pic.raise_irq(1)
    assert pic.pending_vector() is None  # same level still in service
    outb(pic, 0x20, 0x20)  # non-specific EOI
    assert pic.isr == 0
    assert pic.acknowledge() == 0x21


def test_pic_masking_holds_requests_until_unmasked() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    outb(pic, 0x21, 0x01)  # mask IRQ 0
    pic.raise_irq(0)
    assert pic.pending_vector() is None
    outb(pic, 0x21, 0x00)
    assert pic.pending_vector() == 0x20


def test_pic_priority_lowest_irq_first_and_nesting() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(4)
    pic.raise_irq(3)
    assert pic.acknowledge() == 0x23
    # IRQ 4 waits behind the in-service IRQ 3, IRQ 0 preempts it.
    assert pic.pending_vector() is None
    pic.raise_irq(0)
    assert pic.acknowledge() == 0x20
    assert pic.isr == 0b1001
    outb(pic, 0x20, 0x20)  # non-specific EOI ends the highest priority: IRQ 0
    assert pic.isr == 0b1000
    outb(pic, 0x20, 0x63)  # specific EOI for IRQ 3
    assert pic.isr == 0
    assert pic.acknowledge() == 0x24


def test_pic_slave_cascade() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(12)
    assert pic.irr == 0x1004  # the slave asks on master IR2
    assert pic.pending_vector() == 0x2C
    assert pic.acknowledge() == 0x2C
    assert pic.isr == 0x1004  # in service on both chips
    # While master IR2 is in service, IRQ 3 waits but IRQ 1 preempts.
    pic.raise_irq(3)
    assert pic.pending_vector() is None
    pic.raise_irq(1)
    assert pic.pending_vector() == 0x21
    outb(pic, 0xA0, 0x20)
    outb(pic, 0x20, 0x20)
    assert pic.isr == 0
    assert pic.acknowledge() == 0x21


def test_pic_slave_priority_sits_at_irq2() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(3)
    pic.raise_irq(15)
    assert pic.acknowledge() == 0x2F  # IRQ 15 (via IR2) beats IRQ 3
    pic.raise_irq(9)
    assert pic.pending_vector() is None  # master IR2 is in service
    outb(pic, 0xA0, 0x20)
    outb(pic, 0x20, 0x20)
    assert pic.acknowledge() == 0x29
    outb(pic, 0xA0, 0x20)
    outb(pic, 0x20, 0x20)
    assert pic.acknowledge() == 0x23


def test_pic_masking_irq2_masks_the_whole_slave() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    outb(pic, 0x21, 0x04)
    pic.raise_irq(8)
    assert pic.pending_vector() is None
    outb(pic, 0x21, 0x00)
    assert pic.pending_vector() == 0x28


def test_pic_spurious_vector_when_nothing_pending() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    assert pic.acknowledge() == 0x27
    assert pic.isr == 0  # a spurious interrupt is not in service


def test_pic_irq2_is_the_cascade_and_cannot_be_raised() -> None:
    pic = Pic8259Pair()
    with pytest.raises(ValueError):
        pic.raise_irq(2)
    with pytest.raises(ValueError):
        pic.raise_irq(16)


def test_pic_ocw3_selects_irr_or_isr_reads() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(0)
    pic.raise_irq(5)
    pic.acknowledge()
    assert inb(pic, 0x20) == 0x20  # IRR is selected after init
    outb(pic, 0x20, 0x0B)
    assert inb(pic, 0x20) == 0x01  # ISR
    assert inb(pic, 0x20) == 0x01  # the selection sticks
    outb(pic, 0x20, 0x0A)
    assert inb(pic, 0x20) == 0x20
    pic.raise_irq(10)
    assert inb(pic, 0xA0) == 0x04
    assert inb(pic, 0x20) == 0x24  # master IR2 shows the slave's request


def test_pic_poll_command_acknowledges() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(6)
    outb(pic, 0x20, 0x0C)
    assert inb(pic, 0x20) == 0x86
    assert pic.isr == 0x40
    outb(pic, 0x20, 0x0C)
    assert inb(pic, 0x20) == 0x00


def test_pic_reinit_resets_state() -> None:
    pic = Pic8259Pair()
    init_pics(pic)
    pic.raise_irq(0)
    pic.acknowledge()
    init_pics(pic, 0x30, 0x38)
    assert pic.isr == 0 and pic.irr == 0
    pic.raise_irq(8)
    assert pic.acknowledge() == 0x38


# --- PIT -----------------------------------------------------------------------------------


def test_pit_idle_until_programmed() -> None:
    edges = Edges()
    pit = Pit8254(edges)
    assert pit.ticks_until_irq() is None
    assert pit.advance(1_000_000) == 0
    assert edges.count == 0


@pytest.mark.parametrize("mode", [2, 3])
def test_pit_periodic_modes_fire_once_per_period(mode: int) -> None:
    pit, edges = pit_with(mode, 1000)
    assert pit.advance(10_000) == 10
    assert edges.count == 10
    assert pit.ticks_until_irq() == 1000


@pytest.mark.parametrize("mode", [2, 3])
def test_pit_split_advance_gives_the_same_edges(mode: int) -> None:
    pit, edges = pit_with(mode, 1000)
    total = sum(pit.advance(n) for n in [1, 998, 1, 1, 1499, 3, 7000, 497])
    assert total == 10
    assert edges.count == 10
    assert pit.ticks == 10_000


def test_pit_ticks_until_irq_is_exact() -> None:
    pit, _ = pit_with(2, 1000)
    assert pit.ticks_until_irq() == 1000
    assert pit.advance(999) == 0
    assert pit.ticks_until_irq() == 1
    assert pit.advance(1) == 1
    assert pit.ticks_until_irq() == 1000
    pit.advance(250)
    wait = pit.ticks_until_irq()
    assert wait == 750
    assert pit.advance(wait - 1) == 0
    assert pit.advance(1) == 1


def test_pit_counting_starts_when_the_reload_is_fully_written() -> None:
    edges = Edges()
    pit = Pit8254(edges)
    outb(pit, 0x43, 0x34)  # channel 0, lobyte/hibyte, mode 2
    outb(pit, 0x40, 0x64)
    pit.advance(500)  # only the low byte is written: not counting
    assert pit.ticks_until_irq() is None
    outb(pit, 0x40, 0x00)
    assert pit.ticks_until_irq() == 100
    assert pit.advance(100) == 1


def test_pit_reload_zero_means_65536() -> None:
    pit, _ = pit_with(2, 0)
    assert pit.ticks_until_irq() == 65536
    assert pit.advance(65535) == 0
    assert pit.advance(1) == 1
    assert pit.channel_state(0).reload == 65536


def test_pit_mode2_counter_reads_and_latch() -> None:
    pit, _ = pit_with(2, 1000)
    assert read_count(pit) == 1000
    pit.advance(10)
    assert read_count(pit) == 990
    outb(pit, 0x43, 0x00)  # latch channel 0
    pit.advance(100)
    assert inb(pit, 0x40) == 990 & 0xFF
    pit.advance(100)
    assert inb(pit, 0x40) == 990 >> 8
    assert read_count(pit) == 790  # the latch is released once read
    pit.advance(789)
    assert latch_and_read(pit) == 1
    pit.advance(1)
    assert latch_and_read(pit) == 1000  # reloaded, never reads 0


def test_pit_second_latch_before_reading_is_ignored() -> None:
    pit, _ = pit_with(2, 1000)
    outb(pit, 0x43, 0x00)
    pit.advance(50)
    outb(pit, 0x43, 0x00)
    assert read_count(pit) == 1000


def test_pit_lobyte_and_hibyte_access_modes() -> None:
    edges = Edges()
    pit = Pit8254(edges)
    outb(pit, 0x43, 0x14)  # channel 0, lobyte only, mode 2
    outb(pit, 0x40, 200)
    assert pit.ticks_until_irq() == 200
    pit.advance(50)
    assert inb(pit, 0x40) == 150
    assert inb(pit, 0x40) == 150  # no flip-flop in lobyte mode
    outb(pit, 0x43, 0x24)  # channel 0, hibyte only, mode 2
    outb(pit, 0x40, 0x02)
    assert pit.ticks_until_irq() == 0x200
    assert inb(pit, 0x40) == 0x02


def test_pit_mode3_counts_down_by_two_per_half_period() -> None:
    pit, _ = pit_with(3, 10)
    seen = []
    for _ in range(10):
        seen.append(latch_and_read(pit))
        pit.advance(1)
    assert seen == [10, 8, 6, 4, 2, 10, 8, 6, 4, 2]
    assert pit.channel_state(0).out is True


def test_pit_mode3_out_is_a_square_wave() -> None:
    pit, _ = pit_with(3, 7)
    wave = []
    for _ in range(14):
        wave.append(pit.channel_state(0).out)
        pit.advance(1)
    high, low = [True] * 4, [False] * 3  # odd reload: the high half is one tick longer
    assert wave == high + low + high + low


def test_pit_mode0_fires_once() -> None:
    pit, edges = pit_with(0, 500)
    assert not pit.channel_state(0).out
    assert pit.ticks_until_irq() == 500
    assert pit.advance(499) == 0
    assert pit.advance(1) == 1
    assert pit.channel_state(0).out
    assert pit.ticks_until_irq() is None
    assert pit.advance(1_000_000) == 0
    assert edges.count == 1


def test_pit_mode0_count_reaches_zero_and_wraps() -> None:
    pit, _ = pit_with(0, 3)
    pit.advance(3)
    assert latch_and_read(pit) == 0
    pit.advance(1)
    assert latch_and_read(pit) == 0xFFFF


def test_pit_mode0_rearms_on_new_count() -> None:
    pit, edges = pit_with(0, 100)
    pit.advance(1000)
    outb(pit, 0x40, 50)
    assert pit.ticks_until_irq() is None  # writing the first byte stops a mode 0 count
    outb(pit, 0x40, 0)
    assert pit.advance(50) == 1
    assert edges.count == 2


def test_pit_control_word_stops_channel0() -> None:
    pit, _ = pit_with(2, 100)
    outb(pit, 0x43, 0x34)
    assert pit.ticks_until_irq() is None
    assert pit.advance(1000) == 0


def test_pit_other_channels_count_but_never_interrupt() -> None:
    edges = Edges()
    pit = Pit8254(edges)
    program(pit, 2, 3, 1000)
    program(pit, 1, 2, 18)
    pit.advance(5000)
    assert edges.count == 0
    assert pit.ticks_until_irq() is None
    assert latch_and_read(pit, 1) == 18 - 5000 % 18
    assert pit.channel_state(2).reload == 1000


def test_pit_read_back_latches_status_then_count() -> None:
    pit, _ = pit_with(2, 1000)
    pit.advance(1)
    outb(pit, 0x43, 0xC2)  # read-back channel 0: count and status
    pit.advance(5)
    status = inb(pit, 0x40)
    assert status == 0x80 | 0x30 | 2 << 1  # OUT high, count loaded, lobyte/hibyte, mode 2
    assert read_count(pit) == 999


def test_pit_control_port_reads_float() -> None:
    pit = Pit8254(lambda: None)
    assert inb(pit, 0x43) == 0xFF


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from([0, 2, 3]),
    reload=st.integers(min_value=0, max_value=0xFFFF),
    pieces=st.lists(st.integers(min_value=0, max_value=100_000), max_size=30),
)
def test_pit_edges_do_not_depend_on_how_time_is_sliced(
    mode: int, reload: int, pieces: list[int]
) -> None:
    total = sum(pieces)
    whole, _ = pit_with(mode, reload)
    expected = whole.advance(total)
    period = reload or 65536
    assert expected == (min(1, total // period) if mode == 0 else total // period)

    sliced, edges = pit_with(mode, reload)
    assert sum(sliced.advance(n) for n in pieces) == expected == edges.count
    assert sliced.ticks_until_irq() == whole.ticks_until_irq()
    assert latch_and_read(sliced) == latch_and_read(whole)


@settings(max_examples=100, deadline=None)
@given(reload=st.integers(min_value=1, max_value=5000), start=st.integers(0, 20_000))
def test_pit_ticks_until_irq_lands_exactly_on_the_edge(reload: int, start: int) -> None:
    pit, _ = pit_with(2, reload)
    pit.advance(start)
    wait = pit.ticks_until_irq()
    assert wait is not None and 1 <= wait <= reload
    assert pit.advance(wait - 1) == 0
    assert pit.advance(1) == 1


# --- debug exit ----------------------------------------------------------------------------


def test_debug_exit_reports_the_status_byte() -> None:
    statuses: list[int] = []
    dev = DebugExit(statuses.append)
    assert dev.ports == (0x501,)
    outb(dev, 0x501, 42)
    dev.write(0x501, 2, 0x1234)  # only the low byte lands on 0x501
    assert statuses == [42, 0x34]
    assert inb(dev, 0x501) == 0xFF


def test_debug_exit_port_is_configurable() -> None:
    statuses: list[int] = []
    dev = DebugExit(statuses.append, port=0xF4)
    outb(dev, 0xF4, 0)
    assert statuses == [0]
