"""PC legacy devices shared by bare metal and every VM: UART, PIC pair, PIT, debug-exit."""

from hypervisor.devices.debug_exit import DebugExit
from hypervisor.devices.pic import Pic8259Pair
from hypervisor.devices.pit import Pit8254, PitChannelState
from hypervisor.devices.platform import PlatformId
from hypervisor.devices.port import BytePortDevice, PortDevice
from hypervisor.devices.uart import Uart16550

__all__ = [
    "BytePortDevice",
    "DebugExit",
    "Pic8259Pair",
    "Pit8254",
    "PitChannelState",
    "PlatformId",
    "PortDevice",
    "Uart16550",
]
