"""Text typed on a US PC keyboard, as the scan codes (set 1) a kernel reads from port 0x60.

Set 1 is what a PC's keyboard controller hands the kernel (the keyboard speaks set 2 and the
8042 translates, config bit 6), so it is what OS-course keyboard drivers decode: one *make*
code when a key goes down, the same code | 0x80 (*break*) when it comes up. A capital or a
shifted symbol is wrapped in left shift make/break, a control character (Ctrl-A … Ctrl-Z)
in left control make/break. Enter is `\\n` (or `\\r`), Backspace `\\b`, Tab `\\t`, Esc `\\x1b`.
"""

from __future__ import annotations

LEFT_SHIFT, LEFT_CTRL = 0x2A, 0x1D
BREAK = 0x80

_ROWS = (
    (0x02, "1234567890-=", "!@#$%^&*()_+"),
    (0x10, "qwertyuiop[]", "QWERTYUIOP{}"),
    (0x1E, "asdfghjkl;'`", 'ASDFGHJKL:"~'),
    (0x2B, "\\zxcvbnm,./", "|ZXCVBNM<>?"),
)


def _key_table() -> dict[str, tuple[int, int | None]]:
    """Each character: its key's make code, and the modifier held down to type it."""
    keys: dict[str, tuple[int, int | None]] = {
        "\x1b": (0x01, None),
        "\b": (0x0E, None),
        "\t": (0x0F, None),
        "\n": (0x1C, None),
        "\r": (0x1C, None),
        " ": (0x39, None),
    }
    for first, plain, shifted in _ROWS:
        for offset, (key, shift_key) in enumerate(zip(plain, shifted, strict=True)):
            keys[key] = (first + offset, None)
            keys[shift_key] = (first + offset, LEFT_SHIFT)
    for letter in "abcdefghijklmnopqrstuvwxyz":
        control = chr(ord(letter) - ord("a") + 1)
        keys.setdefault(control, (keys[letter][0], LEFT_CTRL))  # ^H ^I ^J ^M: their own keys
    return keys


_KEYS = _key_table()


def scancodes(text: str) -> bytes:
    """The make and break codes of typing `text`; ValueError names a character no key types."""
    codes = bytearray()
    for char in text:
        key = _KEYS.get(char)
        if key is None:
            raise ValueError(f"no key of a US keyboard types {char!r}")
        code, modifier = key
        if modifier is not None:
            codes.append(modifier)
        codes += bytes((code, code | BREAK))
        if modifier is not None:
            codes.append(modifier | BREAK)
    return bytes(codes)


def typeable(text: str) -> bool:
    return all(char in _KEYS for char in text)
