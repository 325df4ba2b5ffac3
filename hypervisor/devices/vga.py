"""A VGA adapter in 80x25 colour text mode (mode 3), as a BIOS leaves it for a kernel.

The text buffer is not device memory here but the VM's own RAM at 0xB8000 (a character byte
and an attribute byte per cell): so every guest store to the screen is an ordinary store,
checkpoints, time travel and traces include the screen, and reading it costs nothing while
the guest runs. The registers are what text-mode kernels touch: the CRTC (cursor shape and
position, start address; the others stored and read back, CR11 bit 7 write-protecting CR0-7),
input status 1 (whose retrace bits toggle on every read, as QEMU's do, so a wait for
retrace ends at once and deterministically), and the attribute controller, sequencer,
graphics controller, DAC and misc output register answered as an idle VGA in mode 3 answers.
The CRTC and status ports sit at 0x3D4/0x3D5/0x3DA while misc output bit 0 says colour
(the power-on value), at the monochrome 0x3B4/0x3B5/0x3BA otherwise; the inactive set reads
as open bus. Not modelled: graphics modes, fonts and planes (the buffer is always at 0xB8000),
palette changes on screen (the screen is drawn in the default 16 colours), split screen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

TEXT_BUFFER = 0xB8000
TEXT_WINDOW = 0x8000  # the text buffer's 32 KiB window (0xB8000-0xBFFFF): the start address wraps
COLUMNS, ROWS = 80, 25
BLANK_CELL = b"\x20\x07"  # a space, light grey on black: the screen a BIOS leaves

MONO_CRTC_INDEX, MONO_CRTC_DATA, MONO_STATUS = 0x3B4, 0x3B5, 0x3BA
COLOR_CRTC_INDEX, COLOR_CRTC_DATA, COLOR_STATUS = 0x3D4, 0x3D5, 0x3DA
ATTR_INDEX, ATTR_DATA_READ = 0x3C0, 0x3C1
MISC_WRITE, INPUT_STATUS_0 = 0x3C2, 0x3C2
SEQ_INDEX, SEQ_DATA = 0x3C4, 0x3C5
DAC_MASK, DAC_READ_INDEX, DAC_WRITE_INDEX, DAC_DATA = 0x3C6, 0x3C7, 0x3C8, 0x3C9
FEATURE_READ, MISC_READ = 0x3CA, 0x3CC
GC_INDEX, GC_DATA = 0x3CE, 0x3CF

# CRTC register indexes (VGA datasheet names).
CURSOR_START, CURSOR_END = 0x0A, 0x0B
START_ADDRESS_HIGH, START_ADDRESS_LOW = 0x0C, 0x0D
CURSOR_LOCATION_HIGH, CURSOR_LOCATION_LOW = 0x0E, 0x0F
VERTICAL_RETRACE_END = 0x11
CURSOR_DISABLE = 0x20  # cursor start register bit 5
CRTC_PROTECT = 0x80  # vertical retrace end bit 7: CR0-CR7 read-only
ATTR_MODE_CONTROL = 0x10
ATTR_BLINK = 0x08  # mode control bit 3: attribute bit 7 blinks instead of a bright background
ATTR_PAS = 0x20  # attribute index bit 5: the palette drives the screen
MISC_COLOR = 0x01  # misc output bit 0: CRTC at 0x3Dx (colour) rather than 0x3Bx
STATUS_RETRACE = 0x09  # input status 1: display disabled (bit 0) and vertical retrace (bit 3)

# Mode 3 as the BIOS programs it (the standard VGA register tables).
MODE3_CRTC = bytes.fromhex(
    "5f 4f 50 82 55 81 bf 1f 00 4f 0d 0e 00 00 00 00 9c 8e 8f 28 1f 96 b9 a3 ff"
)
MODE3_SEQUENCER = bytes.fromhex("03 00 03 00 02")
MODE3_GRAPHICS = bytes.fromhex("00 00 00 00 00 10 0e 00 ff")
MODE3_ATTRIBUTE = bytes.fromhex("00 01 02 03 04 05 14 07 38 39 3a 3b 3c 3d 3e 3f 0c 00 0f 08 00")
MODE3_MISC = 0x67
_SHARED = range(ATTR_INDEX, GC_DATA + 1)  # the same for colour and monochrome
CRTC_REGISTERS = 0x40  # the index register is 6 bits wide: all 64 are stored

# The 16 colours of the default palette, by attribute nibble (RGB).
PALETTE = (
    "#000000", "#0000aa", "#00aa00", "#00aaaa", "#aa0000", "#aa00aa", "#aa5500", "#aaaaaa",
    "#555555", "#5555ff", "#55ff55", "#55ffff", "#ff5555", "#ff55ff", "#ffff55", "#ffffff",
)  # fmt: skip

# Code page 437 as Unicode: the glyphs of the control codes too, as the VGA font draws them.
_CP437_LOW = " ☺☻♥♦♣♠•◘○◙♂♀♪♫☼►◄↕‼¶§▬↨↑↓→←∟↔▲▼"
_CP437_HIGH = bytes(range(0x80, 0x100)).decode("cp437")
CP437 = _CP437_LOW + bytes(range(0x20, 0x7F)).decode() + "⌂" + _CP437_HIGH


@dataclass(frozen=True, slots=True)
class Screen:
    """What the monitor shows at one moment: 25 lines of 80 characters, their attribute
    bytes (low nibble foreground, high nibble background, bit 7 blink or bright background),
    and the cursor as (row, column), None when hidden or off the screen."""

    text: tuple[str, ...]
    attributes: tuple[bytes, ...]
    cursor: tuple[int, int] | None
    blink: bool

    def lines(self) -> list[str]:
        """The text without trailing blanks, as `vmlab run --screen` prints it."""
        return [line.rstrip() for line in self.text]

    @property
    def blank(self) -> bool:
        """Still the screen the BIOS left: nothing but grey-on-black spaces."""
        return all(row == _BLANK_ROW for row in self.attributes) and not "".join(self.text).strip()


_BLANK_ROW = BLANK_CELL[1:] * COLUMNS


def blank_text_buffer() -> bytes:
    """The 80x25 text buffer a PC BIOS leaves behind: every cell a grey-on-black space."""
    return BLANK_CELL * (COLUMNS * ROWS)


@dataclass(eq=False)
class VgaText(BytePortDevice):
    """The VGA's I/O registers; `screen(read)` draws the text buffer read from guest RAM."""

    CHECKPOINTED = (
        "misc",
        "feature",
        "crtc_index",
        "crtc",
        "sequencer_index",
        "sequencer",
        "graphics_index",
        "graphics",
        "attribute_index",
        "attribute",
        "attribute_flip_flop",
        "status",
        "dac_mask",
        "dac_read_index",
        "dac_write_index",
        "dac_component",
        "dac_reading",
        "dac",
    )
    NOT_CHECKPOINTED = ("name", "ports")

    name: str = "VGA"
    ports: tuple[int, ...] = field(init=False)
    misc: int = field(default=MODE3_MISC, init=False)
    feature: int = field(default=0, init=False)
    crtc_index: int = field(default=0, init=False)
    crtc: bytearray = field(default_factory=lambda: _registers(MODE3_CRTC), init=False)
    sequencer_index: int = field(default=0, init=False)
    sequencer: bytearray = field(default_factory=lambda: bytearray(MODE3_SEQUENCER), init=False)
    graphics_index: int = field(default=0, init=False)
    graphics: bytearray = field(default_factory=lambda: bytearray(MODE3_GRAPHICS), init=False)
    attribute_index: int = field(default=ATTR_PAS, init=False)
    attribute: bytearray = field(default_factory=lambda: bytearray(MODE3_ATTRIBUTE), init=False)
    attribute_flip_flop: bool = field(default=False, init=False)  # False: 0x3C0 takes an index
    status: int = field(default=0, init=False)  # input status 1
    dac_mask: int = field(default=0xFF, init=False)
    dac_read_index: int = field(default=0, init=False)
    dac_write_index: int = field(default=0, init=False)
    dac_component: int = field(default=0, init=False)  # 0-2: red, green, blue of one entry
    dac_reading: bool = field(default=False, init=False)  # DAC state: last index set for reads
    dac: bytearray = field(default_factory=lambda: bytearray(3 * 256), init=False)

    def __post_init__(self) -> None:
        self.ports = (
            MONO_CRTC_INDEX,
            MONO_CRTC_DATA,
            MONO_STATUS,
            *_SHARED,
            COLOR_CRTC_INDEX,
            COLOR_CRTC_DATA,
            COLOR_STATUS,
        )

    # ------------------------------------------------------------------ the screen
    def screen(self, read: Callable[[int, int], bytes]) -> Screen:
        """The screen as the CRTC scans it out of guest memory (`read(address, size)`)."""
        start = (self.crtc[START_ADDRESS_HIGH] << 8 | self.crtc[START_ADDRESS_LOW]) * 2
        size = 2 * COLUMNS * ROWS
        offset = start % TEXT_WINDOW
        cells = read(TEXT_BUFFER + offset, min(size, TEXT_WINDOW - offset))
        if len(cells) < size:  # the start address wrapped around the window's end
            cells += read(TEXT_BUFFER, size - len(cells))
        chars, attrs = cells[0::2], cells[1::2]
        text = tuple(
            "".join(CP437[c] for c in chars[row * COLUMNS : (row + 1) * COLUMNS])
            for row in range(ROWS)
        )
        attributes = tuple(attrs[row * COLUMNS : (row + 1) * COLUMNS] for row in range(ROWS))
        return Screen(text, attributes, self._cursor(start // 2), self.blink)

    @property
    def blink(self) -> bool:
        return bool(self.attribute[ATTR_MODE_CONTROL] & ATTR_BLINK)

    def _cursor(self, start: int) -> tuple[int, int] | None:
        shape_start, shape_end = self.crtc[CURSOR_START], self.crtc[CURSOR_END] & 0x1F
        if shape_start & CURSOR_DISABLE or (shape_start & 0x1F) > shape_end:
            return None  # disabled, or a start line below the end line: no cursor is drawn
        location = self.crtc[CURSOR_LOCATION_HIGH] << 8 | self.crtc[CURSOR_LOCATION_LOW]
        cell = (location - start) % (TEXT_WINDOW // 2)
        return divmod(cell, COLUMNS) if cell < COLUMNS * ROWS else None

    # ------------------------------------------------------------------ registers
    def _active(self, port: int) -> bool:
        """Is `port` (a CRTC or status port) in the set the misc output register selects?"""
        return (port >= COLOR_CRTC_INDEX) == bool(self.misc & MISC_COLOR)

    def _read_byte(self, port: int) -> int:
        if port in _SHARED:
            return self._read_shared(port)
        if not self._active(port):
            return 0xFF
        if port in (COLOR_CRTC_INDEX, MONO_CRTC_INDEX):
            return self.crtc_index
        if port in (COLOR_CRTC_DATA, MONO_CRTC_DATA):
            return self.crtc[self.crtc_index]
        if port in (COLOR_STATUS, MONO_STATUS):
            self.attribute_flip_flop = False  # reading input status 1 resets the flip-flop
            self.status ^= STATUS_RETRACE
            return self.status
        return 0xFF

    def _read_shared(self, port: int) -> int:
        """The ports at 0x3C0-0x3CF, the same for colour and monochrome."""
        if port == ATTR_INDEX:  # the index while one is expected, else 0 (as QEMU)
            return 0 if self.attribute_flip_flop else self.attribute_index
        if port == ATTR_DATA_READ:
            return self._attribute_register()
        if port == INPUT_STATUS_0:
            return 0x00
        if port == SEQ_INDEX:
            return self.sequencer_index
        if port == SEQ_DATA:
            return _get(self.sequencer, self.sequencer_index)
        if port == DAC_MASK:
            return self.dac_mask
        if port == DAC_READ_INDEX:
            return 0x03 if self.dac_reading else 0x00
        if port == DAC_WRITE_INDEX:
            return self.dac_write_index
        if port == DAC_DATA:
            return self._read_dac()
        if port == FEATURE_READ:
            return self.feature
        if port == MISC_READ:
            return self.misc
        if port == GC_INDEX:
            return self.graphics_index
        if port == GC_DATA:
            return _get(self.graphics, self.graphics_index)
        return 0xFF  # 0x3CB, 0x3CD: not decoded

    def _attribute_register(self) -> int:
        return _get(self.attribute, self.attribute_index & 0x1F)

    def _read_dac(self) -> int:
        value = self.dac[3 * self.dac_read_index + self.dac_component]
        self.dac_component += 1
        if self.dac_component == 3:
            self.dac_component, self.dac_read_index = 0, (self.dac_read_index + 1) & 0xFF
        return value

    def _write_byte(self, port: int, value: int) -> None:
        if port not in _SHARED:
            if self._active(port):
                self._write_crtc_or_feature(port, value)
            return
        if port == ATTR_INDEX:
            self._write_attribute(value)
        elif port == MISC_WRITE:
            self.misc = value
        elif port == SEQ_INDEX:
            self.sequencer_index = value & 0x07
        elif port == SEQ_DATA:
            _set(self.sequencer, self.sequencer_index, value)
        elif port == DAC_MASK:
            self.dac_mask = value
        elif port == DAC_READ_INDEX:
            self.dac_read_index, self.dac_component, self.dac_reading = value, 0, True
        elif port == DAC_WRITE_INDEX:
            self.dac_write_index, self.dac_component, self.dac_reading = value, 0, False
        elif port == DAC_DATA:
            self._write_dac(value)
        elif port == GC_INDEX:
            self.graphics_index = value & 0x0F
        elif port == GC_DATA:
            _set(self.graphics, self.graphics_index, value)

    def _write_crtc_or_feature(self, port: int, value: int) -> None:
        if port in (COLOR_CRTC_INDEX, MONO_CRTC_INDEX):
            self.crtc_index = value & (CRTC_REGISTERS - 1)
        elif port in (COLOR_CRTC_DATA, MONO_CRTC_DATA):
            index = self.crtc_index
            if self.crtc[VERTICAL_RETRACE_END] & CRTC_PROTECT and index <= 7:
                if index != 7:
                    return  # write-protected; only CR7's line compare bit 4 stays writable
                value = (self.crtc[7] & ~0x10) | (value & 0x10)
            self.crtc[index] = value
        else:
            self.feature = value  # writing 0x3DA / 0x3BA sets the feature control register

    def _write_attribute(self, value: int) -> None:
        if not self.attribute_flip_flop:
            self.attribute_index = value & 0x3F
        else:
            _set(self.attribute, self.attribute_index & 0x1F, value)
        self.attribute_flip_flop = not self.attribute_flip_flop

    def _write_dac(self, value: int) -> None:
        self.dac[3 * self.dac_write_index + self.dac_component] = value & 0x3F
        self.dac_component += 1
        if self.dac_component == 3:
            self.dac_component, self.dac_write_index = 0, (self.dac_write_index + 1) & 0xFF


def _registers(values: bytes) -> bytearray:
    """The CRTC's 64 registers: mode 3's 25, then zeros."""
    return bytearray(values.ljust(CRTC_REGISTERS, b"\0"))


def _get(registers: bytearray, index: int) -> int:
    """A register of an indexed group; an index past the group reads as 0, as QEMU's do."""
    return registers[index] if index < len(registers) else 0


def _set(registers: bytearray, index: int, value: int) -> None:
    if index < len(registers):
        registers[index] = value
