"""docs/flows.md documents every problem code the loader can report."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [
    *(ROOT / "bot" / "definitions").glob("*.py"),
    *(ROOT / "bot" / "definitions" / "checks").glob("*.py"),
]
NOT_CODES = {"utf-8", "utf-8-sig", "order-processing"}


def codes_in_source() -> set[str]:
    found: set[str] = set()
    for path in SOURCES:
        found.update(re.findall(r'"([a-z]+(?:-[a-z0-9]+)+)"', path.read_text(encoding="utf-8")))
    return found - NOT_CODES


def test_every_code_is_documented() -> None:
    docs = (ROOT / "docs" / "flows.md").read_text(encoding="utf-8")
    section = docs.split("## Validation messages")[1].split("## Editor support")[0]
    documented = set(re.findall(r"^\| `([a-z0-9-]+)`", section, re.MULTILINE))
    codes = codes_in_source()
    assert len(codes) > 50
    assert codes - documented == set()
    assert documented - codes == set()
