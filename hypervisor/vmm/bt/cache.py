"""The translation cache: fragments of translated kernel code, their exits, links and pages.

Vocabulary after QEMU's TCG and DynamoRIO: a *fragment* is the translation of one guest
block; its *exits* first go through an exit stub to the monitor, and once the target is
translated the monitor *chains* (links) the exit straight to the target fragment, so a warm
cache runs without leaving the CPU. When the cache is full it is *flushed* whole; when a
guest page holding translated code is written, the fragments from that page are
*invalidated* (unlinked, never entered again).

Fragments are keyed as QEMU keys its translation blocks: by the guest-virtual EIP they start
at *and* the guest-physical frame the code was read from (and whether guest paging was on).
Two address spaces mapping different code at one virtual address thus never share a
fragment, one address space's CR3 switch flushes nothing, and two mappings of the same code
share its translation. Self-modifying-code tracking is by physical frame too (`by_page`): a
store through any virtual alias of the code reaches it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from hypervisor.isa import Instruction
from hypervisor.machine.hostram import PAGE


class StubKind(StrEnum):
    """Why translated code leaves a fragment through an exit stub."""

    BRANCH = "branch"  # a direct branch not yet chained
    CALLOUT = "callout"  # an instruction the monitor emulates
    DEADLINE = "deadline"  # the budget ran out before the fragment paid for its block
    STALE = "stale"  # a self-checking fragment found its guest bytes changed


@dataclass
class ExitStub:
    """One way out of a fragment: a direct branch not yet chained, or a callout."""

    id: int
    kind: StubKind
    fragment: int
    guest_eip: int  # branch: the target; callout: the instruction to emulate
    patch_at: int | None = None  # address of the rel32 jump to re-target when chaining
    stub_address: int | None = None  # the stub's own code: where an unchained jump goes
    index: int = 0  # deadline exits: the guest instruction (in the fragment) not yet run
    chained_to: int | None = None  # fragment id once linked


FragmentKey = tuple[int, int, bool]  # (guest EIP, frame of its page, guest paging on)


@dataclass
class Fragment:
    id: int
    guest_start: int
    guest_end: int
    insns: tuple[Instruction, ...]  # guest instructions run from the TC (callouts excluded)
    subkinds: tuple[str, ...]  # per guest instruction: ident / rewritten / callout
    tc_start: int
    tc_end: int
    boundaries: dict[int, int]  # TC address -> index of the guest instruction starting there
    instruction_starts: dict[int, int]  # TC address of each guest instruction's translation
    owners: tuple[tuple[int, int], ...]  # (TC address, guest index) from which code is its
    count_point: int | None  # TC address from which the block is spent from the budget
    callout: Instruction | None  # the instruction that ends the fragment by a callout
    source: bytes  # the guest bytes translated, to check self-modification
    frames: tuple[int, ...] = ()  # the guest-physical frame of each page of `pages`
    paged: bool = False  # translated with the guest's paging on (frames from its tables)
    exits: list[int] = field(default_factory=list)
    self_checked: bool = False  # adaptive: checks its guest bytes on entry instead
    stepping: bool = False  # one instruction, never chained: for stopping at an exact step
    hits: int = 0
    links_in: set[int] = field(default_factory=set)  # exit stub ids chained to us
    valid: bool = True

    @property
    def pages(self) -> range:
        """The guest-virtual pages its bytes come from (one, or two for a block whose last
        instruction straddles a page boundary)."""
        return range(self.guest_start & ~(PAGE - 1), self.guest_end, PAGE)

    @property
    def key(self) -> FragmentKey:
        return (self.guest_start, self.frames[0] if self.frames else 0, self.paged)

    def overlaps(self, frame: int, start: int, end: int) -> bool:
        """Do its guest bytes intersect guest-physical [start, end) inside `frame`?"""
        for page, mapped in zip(self.pages, self.frames, strict=False):
            low, high = page + (start - frame), page + (end - frame)
            if mapped == frame and self.guest_start < high and low < self.guest_end:
                return True
        return False

    def guest_eip_at(self, index: int) -> int:
        if index < len(self.insns):
            return self.insns[index].address
        return self.callout.address if self.callout else self.guest_end

    def index_owning(self, tc_address: int) -> int:
        """The index of the guest instruction whose translation holds `tc_address` (its
        inline sequence, or a stub that finishes it); the prologue and the exits belong to
        the first one."""
        index = 0
        for start, owner in self.owners:
            if start > tc_address:
                break
            index = owner
        return index

    def guest_eip_owning(self, tc_address: int) -> int:
        return self.guest_eip_at(self.index_owning(tc_address))

    @property
    def links_out(self) -> int:
        return sum(1 for _ in self.exits)


@dataclass
class CacheStats:
    hits: int = 0  # dispatches to an existing fragment
    misses: int = 0  # dispatches that needed a translation
    chains: int = 0
    invalidations: int = 0
    flushes: int = 0
    adaptive: int = 0
    translated_insns: int = 0


class TranslationCache:
    def __init__(self, base: int, capacity: int) -> None:
        self.base = base
        self.capacity = capacity
        self.cursor = base
        self.fragments: dict[int, Fragment] = {}
        self.by_guest: dict[FragmentKey, int] = {}  # -> valid fragment id
        self.stepping: dict[FragmentKey, int] = {}  # the same for stepping fragments
        self.by_page: dict[int, set[int]] = {}  # guest-physical frame -> fragment ids
        self.exits: dict[int, ExitStub] = {}
        self.stats = CacheStats()
        self._next_fragment = 0
        self._next_exit = 1  # 0 means "no exit" in the vCPU area
        self._starts: list[tuple[int, int]] = []  # (tc_start, fragment id), for lookups by EIP

    # ------------------------------------------------------------------ space
    @property
    def used(self) -> int:
        return self.cursor - self.base

    def fits(self, size: int) -> bool:
        return self.cursor + size <= self.base + self.capacity

    def reserve(self, size: int) -> int:
        address = self.cursor
        self.cursor += size
        return address

    # ------------------------------------------------------------------ fragments
    def new_fragment_id(self) -> int:
        self._next_fragment += 1
        return self._next_fragment

    def new_exit(
        self, kind: StubKind, fragment: int, guest_eip: int, patch_at: int | None = None
    ) -> ExitStub:
        stub = ExitStub(self._next_exit, kind, fragment, guest_eip, patch_at)
        self.exits[stub.id] = stub
        self._next_exit += 1
        return stub

    def add(self, fragment: Fragment) -> None:
        self.fragments[fragment.id] = fragment
        self._index(fragment)[fragment.key] = fragment.id
        for frame in fragment.frames:
            self.by_page.setdefault(frame, set()).add(fragment.id)
        self._starts.append((fragment.tc_start, fragment.id))
        self.stats.translated_insns += len(fragment.insns) + (1 if fragment.callout else 0)

    def overlapping(self, frame: int, start: int, end: int) -> list[Fragment]:
        """Valid fragments read from guest-physical `frame` whose bytes intersect [start,
        end) (guest-physical)."""
        return [
            f
            for fid in sorted(self.by_page.get(frame, ()))
            if (f := self.fragments[fid]).valid and f.overlaps(frame, start, end)
        ]

    def invalidate(self, fragment: Fragment) -> None:
        fragment.valid = False
        index = self._index(fragment)
        if index.get(fragment.key) == fragment.id:
            del index[fragment.key]
        for frame in fragment.frames:
            self.by_page.get(frame, set()).discard(fragment.id)
        self.stats.invalidations += 1

    def _index(self, fragment: Fragment) -> dict[FragmentKey, int]:
        return self.stepping if fragment.stepping else self.by_guest

    def lookup(self, key: FragmentKey, stepping: bool = False) -> Fragment | None:
        fid = (self.stepping if stepping else self.by_guest).get(key)
        return self.fragments[fid] if fid is not None else None

    def starting_at(self, guest_eip: int) -> Fragment | None:
        """Some valid fragment that starts at `guest_eip`, in any address space (for the
        UI, which shows what runs next)."""
        keys = [k for k in self.by_guest if k[0] == guest_eip]
        return self.fragments[self.by_guest[keys[-1]]] if keys else None

    def chain_target(self, source: FragmentKey, guest_eip: int) -> Fragment | None:
        """The fragment a direct branch of the fragment keyed `source` may jump to without
        coming back to the monitor. With the guest's paging on, only one read from the same
        frame through the same page, as QEMU allows only jumps within a page: the monitor
        checked that mapping when it entered the source, and any change of it comes back
        to the monitor (INVLPG, a CR3 load: callouts). Without paging, any fragment
        (linear = physical)."""
        start, frame, paged = source
        if not paged:
            return self.lookup((guest_eip, guest_eip & ~(PAGE - 1), False))
        if (guest_eip ^ start) & ~(PAGE - 1):
            return None
        target = self.lookup((guest_eip, frame, True))
        return target if target is not None and len(target.pages) == 1 else None

    def fragment_at(self, tc_address: int) -> Fragment | None:
        """The fragment whose code contains `tc_address` (stubs included)."""
        for start, fid in reversed(self._starts):
            if start <= tc_address:
                fragment = self.fragments.get(fid)
                if fragment and tc_address < fragment.tc_end:
                    return fragment
                return None
        return None

    def contains(self, tc_address: int) -> bool:
        return self.base <= tc_address < self.base + self.capacity

    # ------------------------------------------------------------------ invalidation
    def invalidate_page(self, page: int) -> list[Fragment]:
        """Forget every fragment translated from `page`; returns them (to unlink)."""
        gone = self.overlapping(page, page, page + PAGE)
        for fragment in gone:
            self.invalidate(fragment)
        return gone

    def flush(self) -> None:
        self.cursor = self.base
        self.fragments.clear()
        self.by_guest.clear()
        self.stepping.clear()
        self.by_page.clear()
        self.exits.clear()
        self._starts.clear()
        self.stats.flushes += 1

    @property
    def traced_pages(self) -> set[int]:
        return {page for page, ids in self.by_page.items() if ids}
