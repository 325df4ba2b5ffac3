"""A recorded step's memory writes are at the linear addresses the guest's instruction names:
what the UI's page tables pane walks ("last write") and what a reader of a trace expects.

`tests/guests/higher_store` turns on paging with a higher-half mapping (two 4 MiB pages, the
second at 0xC0000000 onto physical 0) and stores to 0xC0200000, as a kernel linked at 3 GiB
writes its own data. Unicorn's write hook reports the physical address under paging
(0x200000): the recorder must find the linear one from the instruction, or the pane walks
linear 0x200000 instead. Stores the CPU makes into the monitor's own pages (bt's vCPU area,
a shadow GDT's accessed bits) are not the guest's and are not recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hypervisor.guest.image import load_guest
from hypervisor.machine.machine import MONITOR_BASE
from hypervisor.trace.timetravel import TimeMachine
from tests.conftest import needs_nasm
from tests.test_platform import build

STORED = 0x12345678


@needs_nasm
@pytest.mark.parametrize("mode", ["native", "trap", "bt"])
def test_a_store_through_a_higher_half_mapping_is_recorded_at_its_linear_address(
    tmp_path: Path, mode: str
) -> None:
    machine = TimeMachine(load_guest(str(build(tmp_path, "higher_store"))), mode)
    machine.seek(10_000)  # past the debug exit: the whole run is recorded
    stores = [
        write
        for step in range(len(machine.recording))
        if (record := machine.recording.record(step)) is not None
        for write in record.writes
        if write.value == STORED
    ]
    assert [w.address for w in stores] == [0xC0200000]


@needs_nasm
@pytest.mark.parametrize("mode", ["trap", "bt"])
def test_no_recorded_write_is_the_monitors_own(tmp_path: Path, mode: str) -> None:
    machine = TimeMachine(load_guest(str(build(tmp_path, "higher_store"))), mode)
    machine.seek(10_000)
    recording = machine.recording
    assert len(recording.mem_addresses) > 1000  # the directory cleared, the store
    assert all(address < MONITOR_BASE for address in recording.mem_addresses)
