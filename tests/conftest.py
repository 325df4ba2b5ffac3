"""Shared test helpers: small guests written inline in NASM."""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from hypervisor.guest.image import GuestImage, load_guest

HAVE_NASM = shutil.which("nasm") is not None
needs_nasm = pytest.mark.skipif(not HAVE_NASM, reason="nasm is not installed (CI installs it)")


@pytest.fixture
def asm(tmp_path: Path) -> Callable[[str], GuestImage]:
    """Assemble a snippet (contract header added) into a guest image."""
    if not HAVE_NASM:
        pytest.skip("nasm is not installed (CI installs it)")

    def build(body: str, name: str = "snippet") -> GuestImage:
        source = tmp_path / f"{name}.asm"
        source.write_text("bits 32\norg 0x100000\n" + textwrap.dedent(body))
        return load_guest(str(source))

    return build
