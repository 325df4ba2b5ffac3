"""PC legacy devices shared by bare metal and every VM: UART, PIC pair, PIT, debug-exit, the
8042 keyboard controller and the VGA in text mode."""

from hypervisor.devices.debug_exit import DebugExit
from hypervisor.devices.i8042 import Kbc8042
from hypervisor.devices.pic import Pic8259Pair
from hypervisor.devices.pit import Pit8254, PitChannelState
from hypervisor.devices.platform import PlatformId
from hypervisor.devices.port import BytePortDevice, PortDevice
from hypervisor.devices.uart import Uart16550
from hypervisor.devices.vga import Screen, VgaText

__all__ = [
    "BytePortDevice",
    "DebugExit",
    "Kbc8042",
    "Pic8259Pair",
    "Pit8254",
    "PitChannelState",
    "PlatformId",
    "PortDevice",
    "Screen",
    "Uart16550",
    "VgaText",
]
