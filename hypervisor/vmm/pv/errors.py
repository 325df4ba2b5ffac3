"""The pv monitor's error codes: what a refused hypercall returns in EAX (32-bit two's
complement), and the exception that carries one from where the refusal is decided."""

from __future__ import annotations

E_NOSYS = -1  # no hypercall has this number
E_FAULT = -2  # a guest buffer, table or frame is not inside guest RAM
E_INVAL = -3  # an argument is out of range (length, selector, register index...)
E_PERM = -4  # a mapping the monitor does not allow (a page table writable, its window)
ERRORS = {E_NOSYS: "E_NOSYS", E_FAULT: "E_FAULT", E_INVAL: "E_INVAL", E_PERM: "E_PERM"}


class HypercallError(Exception):
    """The call is refused: `code` goes back to the guest in EAX, `why` into the log."""

    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code, self.why = code, why
