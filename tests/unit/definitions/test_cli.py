"""``relay validate`` and ``relay schema``: exit codes, formats, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bot import __version__
from bot.cli import main

ROOT = Path(__file__).resolve().parents[3]
GOOD = (
    "name: good\npermissions: {run: {users: [U0AAA]}}\n"
    "steps:\n  - {id: a, kind: notify, text: hi}\n"
)
WARN = "name: warn\nsteps:\n  - {id: a, kind: notify, text: hi}\n"
BAD = "name: bad\nsteps:\n  - {id: a, kind: htp}\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD, encoding="utf-8")
    return tmp_path


def test_clean_directory_exits_0(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out == "1 file, 1 valid, 0 errors, 0 warnings\n"


def test_errors_exit_1_and_list_fixes(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "bad.yaml").write_text(BAD, encoding="utf-8")
    assert main(["validate", str(folder)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{folder / 'bad.yaml'}:3:13: error: unknown step kind `htp`: did you mean `http`?",
        "    fix: use one of `http`, `approval`, `notify`, `wait`, `flow`, `parallel`",
        "2 files, 1 valid, 1 error, 0 warnings",
    ]


def test_warnings_pass_unless_strict(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "warn.yaml").write_text(WARN, encoding="utf-8")
    assert main(["validate", str(folder)]) == 0
    assert main(["validate", "--strict", str(folder)]) == 1
    assert "2 files, 2 valid, 0 errors, 1 warning" in capsys.readouterr().out


def test_json_format(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = folder / "bad.yaml"
    bad.write_text(BAD, encoding="utf-8")
    good = folder / "good.yaml"
    assert main(["validate", "--format", "json", str(bad), str(good)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [
        {"file": str(bad), "flow": None, "valid": False},
        {"file": str(good), "flow": "good", "valid": True},
    ]
    assert report["errors"] == 1
    assert report["warnings"] == 0
    assert report["problems"] == [
        {
            "file": str(bad),
            "line": 3,
            "column": 13,
            "severity": "error",
            "code": "unknown-step-kind",
            "message": "unknown step kind `htp`: did you mean `http`?",
            "fix": "use one of `http`, `approval`, `notify`, `wait`, `flow`, `parallel`",
        }
    ]


def test_default_directory_comes_from_settings(
    folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_FLOWS_DIR", str(folder))
    assert main(["validate"]) == 0
    assert capsys.readouterr().out.startswith("1 file, 1 valid")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "no/such/path"], "relay: no/such/path: no such file or directory\n"),
        (["validate", "EMPTY"], "relay: EMPTY: no flow files (*.yaml, *.yml) in this directory\n"),
    ],
)
def test_bad_paths_are_one_line_usage_errors(
    args: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == message
    assert captured.out == ""


def test_schema_prints_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["title"] == "Relay flow"
    target = tmp_path / "flow.schema.json"
    assert main(["schema", "--output", str(target)]) == 0
    assert json.loads(target.read_text(encoding="utf-8")) == printed
    assert main(["schema", "--output", str(tmp_path / "missing" / "x.json")]) == 2


def test_help_version_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"relay {__version__}\n"
    assert main(["validate", "--help"]) == 0
    assert "examples:" in capsys.readouterr().out
    assert main([]) == 2
    assert "usage: relay" in capsys.readouterr().err
    assert main(["validate", "--format", "yaml"]) == 2


def test_python_m_bot_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "validate", "flows"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.endswith("0 errors, 0 warnings\n")
    missing = subprocess.run(
        [sys.executable, "-m", "bot", "validate", "nowhere"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (missing.returncode, missing.stderr) == (
        2,
        "relay: nowhere: no such file or directory\n",
    )
