"""The panes of the main screen, one module each."""

from tui.panes.base import Pane
from tui.panes.code import CodePane
from tui.panes.console import ConsolePane
from tui.panes.events import EventsPane
from tui.panes.overhead import OverheadPane
from tui.panes.paging import PagingPane
from tui.panes.registers import RegistersPane
from tui.panes.screen import GuestInput, ScreenPane
from tui.panes.translation import TranslationCachePane, TranslationPane
from tui.panes.vms import VmsPane

__all__ = [
    "CodePane",
    "ConsolePane",
    "EventsPane",
    "GuestInput",
    "OverheadPane",
    "PagingPane",
    "Pane",
    "RegistersPane",
    "ScreenPane",
    "TranslationCachePane",
    "TranslationPane",
    "VmsPane",
]
