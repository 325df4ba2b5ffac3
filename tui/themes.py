"""The two themes: Textual's dark default, and a high-contrast light one for projectors in
bright classrooms (black on white, saturated class colours)."""

from __future__ import annotations

from textual.theme import Theme

DARK = "textual-dark"
LIGHT = Theme(
    name="vmlab-light",
    primary="#003DA5",
    secondary="#6A1B9A",
    accent="#005A70",
    warning="#8A4500",
    error="#B00020",
    success="#00601A",
    foreground="#000000",
    background="#FFFFFF",
    surface="#F0F0F0",
    panel="#DCDCDC",
    dark=False,
    variables={"text-muted": "#404040", "border": "#003DA5", "footer-key-foreground": "#003DA5"},
)
