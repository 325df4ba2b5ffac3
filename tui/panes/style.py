"""Colours by meaning, as theme variables: they follow the dark and the light theme."""

from __future__ import annotations

from hypervisor.events import InsnClass

CLASS_STYLE = {
    InsnClass.NATIVE: "$text-muted",
    InsnClass.DIRECT: "$text-success",
    InsnClass.TRAPPED: "$text-error",
    InsnClass.TRANSLATED: "$text-accent",
    InsnClass.HYPERCALL: "$text-secondary",
}
HOLE_STYLE = "bold $text-warning"
CHANGED_STYLE = "bold $text-warning"
DIFFERS_STYLE = "$text-primary"
MUTED = "$text-muted"
KIND_STYLE = {
    "trap": "$text-error",
    "trapped": "$text-error",
    "interrupt": "$text-primary",
    "io": "$text-muted",
    "console": "$text-success",
    "isolation": "bold $text-warning",
    "state": "$text-secondary",
    "hole": HOLE_STYLE,
    "note": "italic $text-accent",
}
