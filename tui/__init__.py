"""vmlab's terminal UI (Textual).

Textual repaints on a timer that, after each paint, sleeps one to two frame periods before it
looks for changes again: at its default 60 frames a second, a step taken 30 ms after the last
could wait 15 ms more to be shown. At 120, a held key's steps (~30 a second) never wait. The
cap only bounds how often the screen *may* repaint (vmlab publishes ≤ 30 snapshots a second
in run mode), so it costs nothing. It must be set before Textual is imported.
"""

import os

os.environ.setdefault("TEXTUAL_FPS", "120")
