"""Prebuilt sample images are committed so users need no nasm; they must match their source."""

from __future__ import annotations

from hypervisor.guest.image import load_guest, sample_names
from hypervisor.guest.samples import stale_samples
from tests.conftest import needs_nasm


@needs_nasm
def test_committed_images_are_fresh():
    assert stale_samples() == [], "rebuild with: uv run python -m hypervisor.guest.samples"


def test_every_sample_has_a_line_map():
    for name in sample_names():
        for paravirtual in (False, True):
            image = load_guest(name, paravirtual)
            assert image.lines, image.name
            entry = image.line_at(0x100000)
            assert entry is not None and entry.text.strip()


def test_every_sample_has_a_paravirtual_build_carrying_the_mark():
    for name in sample_names():
        assert not load_guest(name).paravirtual
        pv = load_guest(name, paravirtual=True)
        assert pv.name == f"{name}.pv" and pv.paravirtual
