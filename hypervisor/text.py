"""Text that comes from outside the tool — a guest's console, a trace file's names, notes and
instructions, a lesson — shown on a terminal with its control characters made visible.

Written raw, an escape sequence in such text would act on the terminal: retitle it, move the
cursor, garble the screen. So C0 controls become their Unicode pictures (ESC shows as ␛),
DEL shows as ␡, and C1 controls (0x80-0x9F, which some terminals obey) as \\x9b. Newlines
and tabs stay as they are where the text is shown as lines (a console), and are made visible
too where it must stay on one line (a status line, an event row, an error message). A serial
console's CR LF is a line break there too (kernels write "\\r\\n", as a UART terminal wants);
a CR alone, which would overwrite the line, is shown. A NUL there shows as nothing, as on a
terminal (which takes it as padding): kernels that write a C string's `sizeof` bytes send
its terminator too, and QEMU's serial terminal shows none.
"""

from __future__ import annotations

_PICTURES = {code: chr(0x2400 + code) for code in range(0x20)} | {0x7F: "\u2421"}
_PICTURES |= {code: f"\\x{code:02x}" for code in range(0x80, 0xA0)}
_ONE_LINE = str.maketrans(_PICTURES)
_KEPT = (0x09, 0x0A)  # tab and line feed; a NUL, a terminal's padding, shows as nothing
_LINES = str.maketrans({k: v for k, v in _PICTURES.items() if k not in _KEPT} | {0x00: ""})


def visible(text: str, *, lines: bool = False) -> str:
    """`text` safe to print: every control character shown, none obeyed. With `lines`, line
    feeds (CR LF as one) and tabs are kept and NULs dropped (for multi-line text such as a
    console)."""
    if lines:
        return text.replace("\r\n", "\n").translate(_LINES)
    return text.translate(_ONE_LINE)
