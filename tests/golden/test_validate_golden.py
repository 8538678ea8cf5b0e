"""Golden tests of ``relay validate`` on a directory of broken flows.

The real CLI runs as a subprocess from the repository root, so printed paths
are relative and stable. ``broken_flows/`` holds one file per class of
problem; ``validate.txt`` and ``validate.json`` are the expected outputs.

To accept a deliberate change of output, rewrite the golden files with::

    RELAY_UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden

and review the diff before committing it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BROKEN = HERE.relative_to(ROOT) / "broken_flows"
UPDATE = os.environ.get("RELAY_UPDATE_GOLDEN") == "1"


def relay(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("RELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def compare(actual: str, golden: Path) -> None:
    if UPDATE:
        golden.write_text(actual, encoding="utf-8")
        return
    assert golden.exists(), f"{golden} is missing: run with RELAY_UPDATE_GOLDEN=1"
    assert actual == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("args", "golden"),
    [((), "validate.txt"), (("--format", "json"), "validate.json")],
    ids=["text", "json"],
)
def test_validate_broken_flows(args: tuple[str, ...], golden: str) -> None:
    result = relay("validate", str(BROKEN), *args)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    compare(result.stdout, HERE / golden)


def test_golden_files_cover_every_broken_file_and_many_codes() -> None:
    report = json.loads((HERE / "validate.json").read_text(encoding="utf-8"))
    files = {Path(entry["file"]).name for entry in report["files"]}
    assert files == {path.name for path in (HERE / "broken_flows").iterdir()}
    codes = {problem["code"] for problem in report["problems"]}
    assert len(codes) >= 40
    assert report["errors"] == sum(p["severity"] == "error" for p in report["problems"])
