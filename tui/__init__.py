"""vmlab's terminal UI (Textual).

Textual repaints on a timer that, after each paint, sleeps one to two frame periods before it
looks for changes again: at its default 60 frames a second, a step shown 30 ms after the last
one could wait 15 ms more to be painted, and keys pressed back to back up to 33 ms. At 240
the wait is at most 8 ms. The rate only bounds how often the screen *may* repaint: vmlab
publishes at most ~30 snapshots a second in run mode, and a step is one repaint. It must be
set before Textual is imported.
"""

import os

os.environ.setdefault("TEXTUAL_FPS", "240")
