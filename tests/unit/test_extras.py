"""The extras users install and the pins the dev venv and the image install are the same packages."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_extras_pin_what_requirements_extras_pins() -> None:
    """`pip install cachetasks[all]` and requirements-extras.txt install the same versions."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = {p for name, packages in extras.items() if name != "all" for p in packages}
    lines = (ROOT / "requirements-extras.txt").read_text().splitlines()
    assert pinned == {line.split("#")[0].strip() for line in lines if line.strip() and not line.startswith("#")}
