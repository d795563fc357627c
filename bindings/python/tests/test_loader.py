"""Finding libboxlite: $BOXLITE_LIBRARY, the bundled copy, pkg-config, the source tree; a
clear error naming every place searched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = Path(__file__).resolve().parents[1] / "boxlite"


def _run(code: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def test_missing_library_names_every_place(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "boxlite")  # outside any source tree, nothing bundled
    env = {k: v for k, v in os.environ.items() if k != "BOXLITE_LIBRARY"}
    env.update(PYTHONPATH=str(tmp_path), PKG_CONFIG_PATH=str(tmp_path), PKG_CONFIG_LIBDIR=str(tmp_path))
    out = _run("import boxlite; boxlite.version()", env, tmp_path)
    assert out.returncode != 0
    assert "LibraryNotFound" in out.stderr
    for place in ("$BOXLITE_LIBRARY (unset)", f"bundled: {tmp_path}/boxlite/_lib/libboxlite.so", "pkg-config", "source tree"):
        assert place in out.stderr, out.stderr


def test_explicit_library_is_used_or_refused(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(PACKAGE.parent), BOXLITE_LIBRARY=str(tmp_path / "nope.so"))
    out = _run("import boxlite; boxlite.version()", env, tmp_path)
    assert out.returncode != 0 and f"$BOXLITE_LIBRARY={tmp_path}/nope.so (no such file)" in out.stderr
    lib = REPO / "target" / "debug" / "libboxlite.so"
    env["BOXLITE_LIBRARY"] = str(lib)
    out = _run("import boxlite, boxlite._ffi as f; print(boxlite.version(), f.lib_path())", env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == str(lib)


def test_bundled_copy_comes_before_the_source_tree(tmp_path: Path) -> None:
    shutil.copytree(PACKAGE, tmp_path / "boxlite")
    (tmp_path / "boxlite" / "_lib").mkdir(exist_ok=True)
    os.symlink(REPO / "target" / "debug" / "libboxlite.so", tmp_path / "boxlite" / "_lib" / "libboxlite.so")
    env = {k: v for k, v in os.environ.items() if k != "BOXLITE_LIBRARY"}
    env["PYTHONPATH"] = str(tmp_path)
    out = _run("import boxlite._ffi as f; print(f.lib_path())", env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{tmp_path}/boxlite/_lib/libboxlite.so"
