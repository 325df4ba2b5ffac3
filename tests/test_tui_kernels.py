"""The UI on a course kernel built with a student's own flags (`tests/ckernels.py`): a stripped
ELF works by address and says why a name does not."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from hypervisor.guest.image import load_guest
from hypervisor.guest.symbols import symbols_of
from tests.ckernels import build_course
from tests.test_tui import synchronously
from tui.app import VmlabApp
from tui.engine import Session


def _opened(app: VmlabApp) -> list[str]:
    """The notices `app` shows, as they come."""
    shown: list[str] = []
    notify = app.notify

    def noted(message: str, **options: Any) -> None:
        shown.append(message)
        notify(message, **options)

    app.notify = noted  # type: ignore[method-assign]
    return shown


@synchronously
async def test_a_stripped_kernel_breaks_by_address_and_says_it_has_no_names(tmp_path: Path):
    built = build_course(tmp_path / "build", "-O2", "-g")
    kmain = symbols_of(load_guest(str(built))).address_of("kmain")
    assert kmain is not None
    stripped = tmp_path / "stripped.elf"
    subprocess.run(["strip", "-o", str(stripped), str(built)], check=True)
    image = load_guest(str(stripped))
    app = VmlabApp(Session(vms=[(image, "trap")], breakpoints=("kmain",)))
    shown = _opened(app)
    async with app.run_test(size=(160, 50)):
        await app.settle()
        assert app.snapshot.vm.step == 0
    assert shown == [
        "--break: this guest has no symbols (a flat image, or a stripped ELF): use 0x…"
    ]
    app = VmlabApp(Session(vms=[(image, "trap")], breakpoints=(hex(kmain),)))
    async with app.run_test(size=(160, 50)):
        await app.settle()
        assert app.snapshot.vm.registers.guest.state.eip == kmain
