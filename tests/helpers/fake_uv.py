"""A fake ``uv`` (a shell script) for VenvBuilder unit tests: no network, no real installs.

- ``uv export ... --extra X`` prints ``export-X.txt`` from the project root, as ``uv export
  --frozen`` prints the locked pins of an extra (and fails as uv does when the file is absent);
- ``uv venv --python PY DIR`` makes ``DIR/bin``;
- anything else (``uv pip sync``/``install``) echoes its argv and the build env, and fails when
  ``$FAIL_PIP`` is set, as a resolver error would.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

FAKE_UV = """\
#!/bin/sh
if [ "$1" = export ]; then
  while [ $# -gt 0 ]; do [ "$1" = --extra ] && extra="$2"; shift; done
  f="$PWD/export-$extra.txt"
  [ -f "$f" ] || { echo "error: Extra \\`$extra\\` is not defined" >&2; exit 2; }
  cat "$f"; exit 0
fi
echo "uv $*"
if [ "$1" = venv ]; then mkdir -p "$4/bin"; echo "Creating virtual environment at: $4"; exit 0; fi
echo "Resolved 3 packages in 5ms"
echo "CMAKE_ARGS=$CMAKE_ARGS"
if [ -n "$FAIL_PIP" ]; then echo "error: No solution found when resolving dependencies" >&2; exit 1; fi
echo "Installed 3 packages in 2ms"
"""


def pins_text(*specs: str) -> str:
    """An export of ``specs`` ("name==1.0") with one made-up hash line each, as uv prints it."""
    return "".join(f"{s} \\\n    --hash=sha256:{hashlib.sha256(s.encode()).hexdigest()}\n" for s in specs)


def fake_uv(tmp: Path) -> str:
    """Write the fake uv into ``tmp`` and return its path."""
    p = tmp / "uv"
    p.write_text(FAKE_UV)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def locked_project(root: Path, pyproject: str, exports: dict[str, str]) -> None:
    """A project root whose ``uv export --extra X`` (with the fake uv) prints ``exports[X]``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text(pyproject)
    digest = hashlib.sha256(repr(sorted(exports.items())).encode()).hexdigest()
    (root / "uv.lock").write_text(f"# stands in for the lock ({digest}); the fake uv reads export-<extra>.txt\n")
    for extra, text in exports.items():
        (root / f"export-{extra}.txt").write_text(text)
