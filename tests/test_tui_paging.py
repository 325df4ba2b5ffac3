"""The page tables pane, driven with Pilot on a real paging guest: the guest's entries
beside the shadow's, the walk to host memory, and `P` to walk another address."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Tabs

from hypervisor.guest.image import load_guest
from hypervisor.vmm.contract import Mode
from hypervisor.vmm.mmu.introspect import PagingKind
from tests.conftest import needs_nasm
from tests.test_tui import press, screen_text, synchronously
from tui.app import VmlabApp
from tui.engine import Session
from tui.engine_commands import Next, Seek

PAGEFAULT = Path(__file__).parent / "guests" / "pagefault.asm"
UNMAPPED = 0x300000  # pagefault.asm leaves this page out of its tables


def pagefault_app(*modes: str) -> VmlabApp:
    image = load_guest(str(PAGEFAULT))
    return VmlabApp(Session(vms=[(image, Mode(mode)) for mode in modes]))


@needs_nasm
@synchronously
async def test_the_pane_shows_the_guest_tables_beside_the_shadow_and_the_walk():
    app = pagefault_app("trap", "native")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        assert app.screen.has_class("-no-paging")  # paging is off at the start
        app.engine.submit(Next("pagefault"))  # the first hidden fault: paging is on
        await press(pilot, "s")  # the faulting instruction, once the monitor filled it in
        paging = app.snapshot.vm.paging
        assert paging is not None and paging.kind is PagingKind.SHADOW
        assert paging.guest is not None and paging.shadow is not None
        assert paging.guest.cr3 != paging.shadow.cr3  # the CPU runs on the monitor's PD
        counts = dict(paging.counts)
        assert counts["hidden faults"] >= 1 and counts["true faults"] == 0
        assert not app.screen.has_class("-no-paging")
        text = screen_text(app)["paging"]
        assert "guest's tables" in text and "shadow (what the CPU walks)" in text
        assert "→ guest-physical" in text and "hidden faults" in text

        await press(pilot, "P", *"0x300000", "enter")  # walk an address the guest left out
        paging = app.snapshot.vm.paging
        assert (paging.linear, paging.why, paging.guest_physical) == (UNMAPPED, "asked for", None)
        assert "true page fault" in screen_text(app)["paging"]

        await press(pilot, "v")  # the bare-metal VM: no shadow, the CPU walks the guest's
        paging = app.snapshot.vm.paging
        assert paging.shadow is None and paging.counts == ()


@needs_nasm
@synchronously
async def test_an_empty_answer_follows_eip_again():
    app = pagefault_app("trap")
    async with app.run_test(size=(160, 50)) as pilot:
        await app.settle()
        await press(pilot, "P", *"0x300000", "enter")
        assert app.snapshot.vm.paging.linear == UNMAPPED
        await press(pilot, "P", "enter")
        view = app.snapshot.vm
        assert (view.paging.linear, view.paging.why) == (view.registers.guest.state.eip, "EIP")


@needs_nasm
def test_snapshot_of_the_page_tables_pane_at_160_by_50(snap_compare):
    """pagefault.asm under trap beside bare metal, just after its first hidden fault. (It
    goes there from elsewhere in the kernel, once the pane is in the layout: the code pane
    keeps its rows while EIP stays inside them, so it must not have drawn them at another
    height first.)"""

    async def run_before(pilot) -> None:
        app = pilot.app
        await app.settle()
        app.engine.submit(Next("pagefault"))
        await app.settle()
        step = app.snapshot.vm.step
        for target in (step + 2000, step + 1):  # in the console code, then back
            app.engine.submit(Seek(target))
            await app.settle()
        await pilot.pause()

    app = pagefault_app("trap", "native")
    assert snap_compare(app, terminal_size=(160, 50), run_before=run_before)


@needs_nasm
@synchronously
async def test_at_80_by_24_the_pane_is_a_tab_while_paging_is_on():
    app = pagefault_app("trap")
    async with app.run_test(size=(80, 24)) as pilot:
        await app.settle()
        tabs = app.query_one(Tabs)
        assert app.query_one("#tab-paging").display is False  # paging off: no tab
        app.engine.submit(Next("pagefault"))
        await press(pilot)
        await app.settle()
        await pilot.pause()
        assert app.query_one("#tab-paging").display
        tabs.active = "tab-paging"
        await pilot.pause()
        assert app.query_one("#paging").display and not app.query_one("#registers").display
        assert "guest's tables" in screen_text(app)["paging"]
