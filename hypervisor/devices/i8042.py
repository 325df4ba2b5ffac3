"""The PC's 8042 keyboard controller with a PS/2 keyboard behind it (no mouse).

Port 0x60 is the data port (the output buffer the kernel reads; bytes for the keyboard or a
command's parameter when written), 0x64 the status register (read) and command register
(write). A byte put in the output buffer sets OBF and, with config bit 0, raises IRQ1; reading
0x60 takes it and moves the next queued byte in. Commands execute at once, so IBF is never
seen set. Modelled: the controller commands kernels send at start-up (read/write the config
byte, self-test, port tests, port enable/disable, output port with A20, pulse reset), the
keyboard commands (reset, enable/disable scanning, defaults, scan code set, LEDs, typematic,
identify, echo). The keyboard always sends set 1 (what translation gives a kernel); a change
of set is acknowledged and reported back but not applied. No mouse: the aux port tests as
working but nothing is ever connected; no timeouts or parity errors.

Power-on state is the one QEMU's controller shows after SeaBIOS (measured): status 0x1C
(self-test passed, the last write a command, unlocked) and config byte 0x61 (keyboard
interrupt on, translation on, mouse port disabled, its system flag clear), scanning enabled,
and 0x60 reading 0xFA (the keyboard's last acknowledgement) until a key comes.
As in QEMU's model, the status's command bit, once a command was written, stays set, and
writing the config byte leaves the status's system flag alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hypervisor.devices.port import BytePortDevice

DATA_PORT, STATUS_PORT = 0x60, 0x64
COMMAND_PORT = STATUS_PORT

# Status register bits.
STATUS_OBF = 0x01  # output buffer full: a byte waits at 0x60
STATUS_IBF = 0x02  # input buffer full (never: commands run at once)
STATUS_SYS = 0x04  # system flag: self-test passed
STATUS_CMD = 0x08  # a byte was written to 0x64 (a command); QEMU never clears it again
STATUS_UNLOCKED = 0x10  # keyboard not inhibited by the key lock

# Config byte ("command byte") bits.
CONFIG_KBD_INT = 0x01
CONFIG_KBD_DISABLE = 0x10
CONFIG_AUX_DISABLE = 0x20
CONFIG_XLATE = 0x40
BIOS_CONFIG = CONFIG_KBD_INT | CONFIG_AUX_DISABLE | CONFIG_XLATE

# Output port bits.
OUTPUT_RESET = 0x01  # the CPU's reset line (active low: 0 resets)
OUTPUT_A20 = 0x02

# Controller commands (written to 0x64).
READ_CONFIG, WRITE_CONFIG = 0x20, 0x60
DISABLE_AUX, ENABLE_AUX, TEST_AUX = 0xA7, 0xA8, 0xA9
SELF_TEST, TEST_KEYBOARD = 0xAA, 0xAB
DISABLE_KEYBOARD, ENABLE_KEYBOARD = 0xAD, 0xAE
READ_INPUT_PORT, READ_OUTPUT_PORT, WRITE_OUTPUT_PORT = 0xC0, 0xD0, 0xD1
WRITE_KEYBOARD_OUTPUT = 0xD2
DISABLE_A20, ENABLE_A20 = 0xDD, 0xDF
PULSE_OUTPUT = 0xF0  # 0xF0-0xFF: pulse low the output port bits clear in the low nibble
SELF_TEST_OK, PORT_TEST_OK = 0x55, 0x00

# Keyboard commands (written to 0x60) and replies.
SET_LEDS, ECHO, SCANCODE_SET, IDENTIFY, TYPEMATIC = 0xED, 0xEE, 0xF0, 0xF2, 0xF3
ENABLE_SCANNING, DISABLE_SCANNING, SET_DEFAULTS, RESET = 0xF4, 0xF5, 0xF6, 0xFF
ACK, RESEND, BAT_OK = 0xFA, 0xFE, 0xAA
KEYBOARD_ID = (0xAB, 0x41)  # an MF2 keyboard, as translation reports it
TRANSLATED_SET = {1: 0x43, 2: 0x41, 3: 0x3F}  # set numbers as a translating 8042 passes them
QUEUE_LIMIT = 256  # bytes the keyboard buffers before it drops keys (QEMU's PS/2 queue)
POLLS_BEFORE_WAIT = 2  # status reads with nothing to read, in a row: the kernel is polling


@dataclass(eq=False)
class Kbc8042(BytePortDevice):
    """`on_irq` is IRQ1's rising edge, `on_reset` the pulse of the CPU reset line, `on_wait`
    a kernel polling the status register for a key (the moment to type, for scripted input)."""

    CHECKPOINTED = (
        "status",
        "config",
        "output_port",
        "output",
        "pending",
        "keyboard_pending",
        "scanning",
        "scancode_set",
        "leds",
        "queue",
        "empty_polls",
    )
    NOT_CHECKPOINTED = ("name", "ports", "on_irq", "on_reset", "on_wait")

    on_irq: Callable[[], None]
    on_reset: Callable[[], None]
    on_wait: Callable[[], None] = lambda: None
    name: str = "8042"
    ports: tuple[int, ...] = (DATA_PORT, STATUS_PORT)
    status: int = field(default=STATUS_SYS | STATUS_CMD | STATUS_UNLOCKED, init=False)
    config: int = field(default=BIOS_CONFIG, init=False)
    output_port: int = field(default=OUTPUT_RESET | OUTPUT_A20, init=False)
    # the output buffer (valid while OBF); at power-on the ACK SeaBIOS read last, which a
    # kernel reading 0x60 without looking at OBF gets (and gets again while nothing comes)
    output: int = field(default=ACK, init=False)
    pending: int | None = field(default=None, init=False)  # a command awaiting its parameter
    keyboard_pending: int | None = field(default=None, init=False)  # the same, keyboard side
    scanning: bool = field(default=True, init=False)
    scancode_set: int = field(default=2, init=False)
    leds: int = field(default=0, init=False)
    queue: bytearray = field(default_factory=bytearray, init=False)  # from the keyboard
    empty_polls: int = field(default=0, init=False)

    @property
    def a20(self) -> bool:
        return bool(self.output_port & OUTPUT_A20)

    # ------------------------------------------------------------------ keys
    def press(self, codes: bytes) -> None:
        """Scan codes from the keyboard (keys typed), dropped while it does not scan or
        when its queue is full, as a keyboard does."""
        if self.scanning:
            self.queue += codes[: max(0, QUEUE_LIMIT - len(self.queue))]
            self._refill()

    def _refill(self) -> None:
        """Move the keyboard's next byte into an empty output buffer, unless it is disabled."""
        if self.queue and not self.status & STATUS_OBF and not self.config & CONFIG_KBD_DISABLE:
            self._put(self.queue.pop(0))

    def _put(self, byte: int) -> None:
        """A byte into the output buffer (a controller reply overwrites what is there)."""
        self.output = byte
        self.status |= STATUS_OBF
        if self.config & CONFIG_KBD_INT:
            self.on_irq()

    def _reply(self, *data: int) -> None:
        """The keyboard's answer to a command: ahead of any keys it has queued."""
        self.queue[:0] = bytes(data)
        self._refill()

    # ------------------------------------------------------------------ ports
    def _read_byte(self, port: int) -> int:
        if port == STATUS_PORT:
            if self.status & STATUS_OBF:
                self.empty_polls = 0
            else:
                self.empty_polls += 1
                if self.empty_polls >= POLLS_BEFORE_WAIT:
                    self.on_wait()
            return self.status
        self.empty_polls = 0
        value = self.output  # an empty buffer reads as the last byte again
        self.status &= ~STATUS_OBF
        self._refill()
        return value

    def _write_byte(self, port: int, value: int) -> None:
        self.empty_polls = 0
        if port == COMMAND_PORT:
            self.status |= STATUS_CMD
            self.pending = None
            self._command(value)
            return
        command, self.pending = self.pending, None
        if command == WRITE_CONFIG:
            self.config = value
            self._refill()
        elif command == WRITE_OUTPUT_PORT:
            self._set_output_port(value)
        elif command == WRITE_KEYBOARD_OUTPUT:
            self._put(value)
        else:
            self._keyboard(value)

    def _command(self, command: int) -> None:
        if command in (WRITE_CONFIG, WRITE_OUTPUT_PORT, WRITE_KEYBOARD_OUTPUT):
            self.pending = command
        elif command == READ_CONFIG:
            self._put(self.config)
        elif command == SELF_TEST:
            self.status |= STATUS_SYS
            self._put(SELF_TEST_OK)
        elif command in (TEST_KEYBOARD, TEST_AUX):
            self._put(PORT_TEST_OK)
        elif command in (DISABLE_AUX, ENABLE_AUX):
            self.config = _with(self.config, CONFIG_AUX_DISABLE, command == DISABLE_AUX)
        elif command in (DISABLE_KEYBOARD, ENABLE_KEYBOARD):
            self.config = _with(self.config, CONFIG_KBD_DISABLE, command == DISABLE_KEYBOARD)
            self._refill()
        elif command == READ_INPUT_PORT:
            self._put(0x80)  # keyboard not inhibited
        elif command == READ_OUTPUT_PORT:
            self._put(self.output_port)
        elif command in (DISABLE_A20, ENABLE_A20):
            self._set_output_port(_with(self.output_port, OUTPUT_A20, command == ENABLE_A20))
        elif command & PULSE_OUTPUT == PULSE_OUTPUT and not command & OUTPUT_RESET:
            self.on_reset()  # 0xFE (and the others pulsing bit 0): reset the CPU

    def _set_output_port(self, value: int) -> None:
        self.output_port = value | OUTPUT_RESET
        if not value & OUTPUT_RESET:
            self.on_reset()

    def _keyboard(self, value: int) -> None:
        """A byte for the keyboard: a command, or the parameter of the last one."""
        command, self.keyboard_pending = self.keyboard_pending, None
        if command == SET_LEDS:
            self.leds = value & 0x07
            self._reply(ACK)
        elif command == TYPEMATIC:
            self._reply(ACK)
        elif command == SCANCODE_SET:
            if value == 0:
                self._reply(ACK, TRANSLATED_SET[self.scancode_set])
            elif value in TRANSLATED_SET:
                self.scancode_set = value
                self._reply(ACK)
            else:
                self._reply(RESEND)
        elif value in (SET_LEDS, TYPEMATIC, SCANCODE_SET):
            self.keyboard_pending = value
            self._reply(ACK)
        elif value == RESET:
            self.queue.clear()
            self.scanning, self.scancode_set, self.leds = True, 2, 0
            self._reply(ACK, BAT_OK)
        elif value in (ENABLE_SCANNING, DISABLE_SCANNING, SET_DEFAULTS):
            if value != SET_DEFAULTS:
                self.scanning = value == ENABLE_SCANNING
            self.queue.clear()
            self._reply(ACK)
        elif value == IDENTIFY:
            self._reply(ACK, *KEYBOARD_ID)
        elif value == ECHO:
            self._reply(ECHO)
        else:
            self._reply(RESEND)


def _with(register: int, bit: int, on: bool) -> int:
    return register | bit if on else register & ~bit
