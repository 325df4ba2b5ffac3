"""Looking into the translation cache: each fragment's guest code beside its translation."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hypervisor.isa import decode_block
from hypervisor.vmm.bt.cache import Fragment, TranslationCache


@dataclass(frozen=True)
class FragmentView:
    """One fragment, ready to show: guest lines and TC lines, with their kinds."""

    fragment: Fragment
    guest: tuple[tuple[int, str, str], ...]  # (guest EIP, text, ident/rewritten/callout)
    tc: tuple[tuple[int, str], ...]  # (TC address, text)


def view(fragment: Fragment, read: Callable[[int, int], bytes]) -> FragmentView:
    guest = [
        (i.address, i.text, kind) for i, kind in zip(fragment.insns, fragment.subkinds, strict=True)
    ]
    if fragment.callout is not None:
        guest.append((fragment.callout.address, fragment.callout.text, "callout"))
    code = read(fragment.tc_start, fragment.tc_end - fragment.tc_start)
    tc = tuple(
        (i.address, i.text)
        for i in decode_block(code, fragment.tc_start, 10_000, stop_at_flow=False)
    )
    return FragmentView(fragment, tuple(guest), tc)


def fragment_listing(
    cache: TranslationCache, read: Callable[[int, int], bytes], limit: int = 20
) -> Iterator[str]:
    """Text blocks, the most used fragments first: guest code left, translated code right."""
    live = sorted((f for f in cache.fragments.values() if f.valid), key=lambda f: -f.hits)
    for fragment in live[:limit]:
        v = view(fragment, read)
        head = (
            f"fragment #{fragment.id}  guest {fragment.guest_start:08x}-"
            f"{fragment.guest_end:08x} → TC {fragment.tc_start:08x}-{fragment.tc_end:08x}  "
            f"hits {fragment.hits}  links in {len(fragment.links_in)} / out "
            f"{fragment.links_out}" + ("  self-checking" if fragment.self_checked else "")
        )
        rows = [head]
        for index in range(max(len(v.guest), len(v.tc))):
            left = ""
            if index < len(v.guest):
                address, text, kind = v.guest[index]
                left = f"{address:08x} {text[:30]:<30} {kind[:5]:<5}"
            right = f"{v.tc[index][0]:08x} {v.tc[index][1]}" if index < len(v.tc) else ""
            rows.append(f"  {left:<50} │ {right}")
        yield "\n".join(rows) + "\n"
