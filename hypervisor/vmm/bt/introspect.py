"""Looking into the translation cache from outside the monitor (the UI, `vmlab tc`): each
fragment's guest code beside its translation, the cache's counters. An executor offers this
through `Executor.introspect()` — None outside binary translation — so no caller reads the
cache's internals or works out for itself which guest instruction a TC address belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import astuple, dataclass, fields

from hypervisor.isa import decode_block
from hypervisor.vmm.bt.cache import Fragment, TranslationCache

TC_LINES = 10_000  # TC instructions decoded for a whole fragment


@dataclass(frozen=True)
class FragmentView:
    """One fragment, ready to show: guest lines and TC lines, with their kinds."""

    fragment: Fragment
    guest: tuple[tuple[int, str, str], ...]  # (guest EIP, text, ident/rewritten/callout)
    tc: tuple[tuple[int, str, bool], ...]  # (TC address, text, a guest instruction starts)


@dataclass(frozen=True)
class CacheView:
    used: int
    capacity: int
    fragments: int  # valid ones
    stats: tuple[tuple[str, int], ...]  # the cache's counters, by name
    recent: tuple[tuple[int, int, int, int, int], ...]  # (id, guest start, end, links in, out)


class CacheIntrospection:
    """A read-only look at one VM's translation cache."""

    def __init__(self, cache: TranslationCache, read: Callable[[int, int], bytes]) -> None:
        self._cache = cache
        self._read = read

    def counters(self) -> dict[str, int]:
        """The cache's size and counters, as the run's summary and JSON give them."""
        c = self._cache
        return {
            "fragments": len(self._valid()),
            "bytes": c.used,
            "capacity": c.capacity,
            "hits": c.stats.hits,
            "misses": c.stats.misses,
            "chains": c.stats.chains,
            "invalidations": c.stats.invalidations,
            "flushes": c.stats.flushes,
            "adaptive": c.stats.adaptive,
        }

    def cache_view(self, recent: int = 20) -> CacheView:
        c, valid = self._cache, self._valid()
        stats = tuple(zip((f.name for f in fields(c.stats)), astuple(c.stats), strict=True))
        latest = tuple(
            (f.id, f.guest_start, f.guest_end, len(f.links_in), f.links_out)
            for f in valid[-recent:]
        )
        return CacheView(c.used, c.capacity, len(valid), stats, latest)

    def around(self, real_eip: int, guest_eip: int, lines: int) -> tuple[FragmentView, str] | None:
        """The fragment the CPU is in (at `real_eip`), else the one the guest enters next
        (at `guest_eip`), with why it was chosen; at most `lines` TC instructions."""
        fragment, why = self._cache.fragment_at(real_eip), "the CPU is running it"
        if fragment is None:
            fragment, why = self._cache.starting_at(guest_eip), "it runs next"
        return None if fragment is None else (self.view(fragment, lines), why)

    def view(self, fragment: Fragment, lines: int = TC_LINES) -> FragmentView:
        guest = [
            (i.address, i.text, kind)
            for i, kind in zip(fragment.insns, fragment.subkinds, strict=False)
        ]
        if fragment.callout is not None:
            guest.append((fragment.callout.address, fragment.callout.text, "callout"))
        code = self._read(fragment.tc_start, fragment.tc_end - fragment.tc_start)
        tc = tuple(
            (i.address, i.text, i.address in fragment.boundaries)
            for i in decode_block(code, fragment.tc_start, lines, stop_at_flow=False)
        )
        return FragmentView(fragment, tuple(guest), tc)

    def listing(self, limit: int = 20) -> Iterator[str]:
        """Text blocks, the most used fragments first: guest code left, translated code
        right."""
        live = sorted(self._valid(), key=lambda f: -f.hits)
        for fragment in live[:limit]:
            v = self.view(fragment)
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

    def _valid(self) -> list[Fragment]:
        return [f for f in self._cache.fragments.values() if f.valid]
