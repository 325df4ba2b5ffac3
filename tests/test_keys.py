"""One table of keys: the README lists exactly its keys, the help screen tells every one, and
each bound key reaches an action the app has."""

from __future__ import annotations

import re
from pathlib import Path

from tui.app import VmlabApp
from tui.keys import KEYS
from tui.screens import HELP

README = Path(__file__).resolve().parents[1] / "README.md"
NAMED = {key.name for key in KEYS if key.name}


def _readme_keys() -> set[str]:
    text = README.read_text()
    section = text[text.index("## The terminal UI") :]
    keys = section[section.index("Keys:") : section.index("(one table")]
    return {name for pair in re.findall(r"`([^`]+)`", keys) for name in pair.split("/")}


def test_the_readme_lists_exactly_the_keys_of_the_table():
    assert _readme_keys() == NAMED


def test_the_help_screen_tells_every_key():
    told = set(re.findall(r"`([^`]+)`", HELP))
    assert NAMED - told == set()


def test_every_bound_key_has_an_action_of_the_app():
    actions = {key.action.split("(")[0] for key in KEYS if key.bound}
    missing = {a for a in actions if not hasattr(VmlabApp, f"action_{a}")}
    assert missing == set()
