"""Compare what a venv holds with what uv.lock pins for it (main's venv and the service venvs)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence

from packaging.markers import Marker

from core.managers.supervisor.lock import Pin, canonical

_LIST = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


def applies_here(pin: Pin) -> bool:
    """Whether a pin's markers hold on this machine (a pin for another platform is not installed)."""
    first = pin.entry.splitlines()[0].rstrip(" \\")
    return ";" not in first or Marker(first.split(";", 1)[1]).evaluate()


def installed(python: str) -> dict[str, str]:
    """Canonical name -> version of every distribution in ``python``'s environment."""
    out = subprocess.run([python, "-c", _LIST], capture_output=True, text=True, timeout=120, check=True)
    return {canonical(k): v for k, v in json.loads(out.stdout).items()}


def differences(pins: Sequence[Pin], have: dict[str, str]) -> list[str]:
    """Locked pins (for this machine) that are missing or at another version; empty when they match."""
    wanted = {p.name: p.version for p in pins if applies_here(p)}
    return [f"{n}: locked {v}, installed {have.get(n, 'nothing')}" for n, v in sorted(wanted.items())
            if have.get(n) != v]
