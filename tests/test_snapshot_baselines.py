"""Every SVG baseline under tests/__snapshots__/ belongs to a test that still exists.

syrupy fails a run that leaves a baseline unused (a snapshot test renamed or removed leaves
its old SVG behind, still looking checked), but not under pytest-xdist: there the check would
need the workers' reports merged, and syrupy skips it. The suite runs on every core, so this
test holds the check, on a collection of the snapshot modules in one process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOTS = ROOT / "tests" / "__snapshots__"


def test_every_snapshot_baseline_belongs_to_a_test():
    svgs = sorted(SNAPSHOTS.glob("*/*.svg"))
    assert svgs, "no baselines found: has tests/__snapshots__ moved?"
    baselines = {f"tests/{svg.parent.name}.py::{svg.stem}" for svg in svgs}
    modules = sorted({b.split("::")[0] for b in baselines if (ROOT / b.split("::")[0]).is_file()})
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts="]
    done = subprocess.run(
        [*command, "-p", "no:cacheprovider", *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    unused = sorted(baselines - set(done.stdout.splitlines()))
    assert unused == [], f"baselines no test makes (delete them): {unused}"
