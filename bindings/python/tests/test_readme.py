"""The README's opening example, run verbatim (as tests/c/example.c is for docs/c-api.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ENGINE, our_shims

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs_verbatim(home: str, rootfs: str) -> None:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = blocks[0]
    assert text.lstrip().startswith("# boxlite for Python\n\n```python\n" + example), "the example must open the README"
    assert len(example.strip().splitlines()) <= 10
    env = dict(
        os.environ,
        PYTHONPATH=str(README.parent),
        BOXLITE_HOME=home,
        BOXLITE_ENGINE=ENGINE,
        BOXLITE_TEST_ROOTFS=rootfs,
    )
    out = subprocess.run([sys.executable, "-c", example], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    # the two streams' chunks may interleave either way (each stream is in order)
    assert lines[0] == "0 hello from a box" and sorted(lines[1:]) == ["stderr b'err\\n'", "stdout b'out\\n'"], out.stdout
    # auto_remove: the box is gone from the home
    assert os.listdir(os.path.join(home, "boxes")) == [], os.listdir(os.path.join(home, "boxes"))
    assert our_shims() == []
