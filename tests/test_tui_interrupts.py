"""The VMs pane shows each VM's interrupt controllers (the 8259, the local APIC, the I/O
APIC) and why the next interrupt is or is not delivered: driven with Pilot on the APIC
shell kernel, and kept as an SVG snapshot."""

from __future__ import annotations

import asyncio

from textual.pilot import Pilot

from hypervisor.guest.image import load_guest
from hypervisor.vmm.contract import Mode
from tui.app import VmlabApp
from tui.engine import Session
from tui.panes import Pane

STEP = "30000"  # the shell kernel has routed its interrupts; its timer is counting


def _app() -> VmlabApp:
    return VmlabApp(Session(vms=[(load_guest("apicsh"), Mode.NATIVE)]))


async def _go(pilot: Pilot) -> None:
    app = pilot.app
    assert isinstance(app, VmlabApp)
    await app.settle()
    await pilot.press("F", *STEP, "enter")
    await app.settle()
    await pilot.pause()


def test_the_vms_pane_shows_the_apics_as_the_kernel_programmed_them():
    async def run() -> None:
        app = _app()
        async with app.run_test(size=(160, 50)) as pilot:
            await _go(pilot)
            assert app.snapshot is not None
            irqs = app.snapshot.vm.interrupts
            assert irqs is not None and irqs.in_use
            text = app.query_one("#vms", Pane).render().plain
        assert "8259 IRR" in text and "IMR ffff" in text and "cut off" in text
        assert "local APIC on" in text and "timer periodic → 0x20" in text
        assert "pin 1 → 0x21 edge" in text and "pin 4 → 0x24 edge" in text

    asyncio.run(run())


def test_the_vms_pane_with_the_apics(snap_compare):
    assert snap_compare(_app(), terminal_size=(160, 50), run_before=_go)
