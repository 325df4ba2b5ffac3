"""What a user can type to go somewhere: a step, an address, a function, a kind of event.

4080          the step (past the recording's frontier: fast-forwarded there)
0x10002a      the next time the guest is about to run the instruction at that address
kmain         the same at a function's address (images with symbols)
console       (fast-forward only) right after the next event of that kind
"""

from __future__ import annotations

from hypervisor.guest.symbols import SymbolTable
from hypervisor.trace.timetravel import Goal


class TargetError(ValueError):
    """Not a place to go; the message is one line for the user."""


def addresses_of(text: str, symbols: SymbolTable) -> frozenset[int]:
    """A breakpoint's addresses, from `0x…` hex or a function name (its own code and each
    copy the compiler inlined)."""
    text = text.strip()
    if text.lower().startswith("0x"):
        try:
            return frozenset({int(text, 16)})
        except ValueError:
            raise TargetError(f"not an address: {text}") from None
    if not symbols.functions:  # a stripped ELF has its code, not the names: say so
        raise TargetError("this guest has no symbols (a flat image, or a stripped ELF): use 0x…")
    addresses = symbols.addresses_of(text)
    if not addresses:
        raise TargetError(f"no function named {text!r} in this guest's symbols")
    return addresses


def address_of(text: str, symbols: SymbolTable) -> int:
    """One address (the page tables pane walks one): a function's own code, else the first
    copy the compiler inlined."""
    own = symbols.address_of(text.strip())
    return own if own is not None else min(addresses_of(text, symbols))


def target_of(text: str, symbols: SymbolTable, kinds: tuple[str, ...] = ()) -> int | Goal:
    """A step number, or a fast-forward `Goal` (a breakpoint, or one of `kinds`)."""
    cleaned = text.replace(",", "").replace("_", "").strip()
    if cleaned.isdigit():
        return int(cleaned)
    if cleaned in kinds:
        return Goal(kind=cleaned)
    if not cleaned:
        raise TargetError("nothing to go to")
    return Goal(breakpoints=addresses_of(cleaned, symbols))
