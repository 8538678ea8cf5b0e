"""The `relay` command as a user runs it: real subprocesses, a real SQLite file, real services."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot.demo.services import DemoServices

ROOT = Path(__file__).resolve().parents[2]

FLOW = """
name: ping
permissions:
  run: {users: [U0ALICE]}
  operate: {users: [U0ALICE]}
secrets: [PING_TOKEN]
inputs:
  n: {type: integer, min: 1}
services:
  echo: {env: ECHO_URL}
steps:
  - id: call
    kind: http
    method: POST
    service: echo
    path: /echo
    headers: {Authorization: "Bearer {{ secrets.PING_TOKEN }}"}
    json: {n: "{{ inputs.n }}"}
  - id: ok
    kind: approval
    question: "Ship {{ inputs.n }}?"
    approvers: {users: [U0BOB]}
  - id: tell
    kind: notify
    text: "done {{ steps.call.output.status }}"
"""


def relay(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'relay.db'}",
        "RELAY_FLOWS_DIR": str(tmp / "flows"),
        "PING_TOKEN": "s3cret-token-value",
        **(env or {}),
    }
    environ.pop("CI", None)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=environ,
        cwd=tmp,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


async def in_thread(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `relay` without blocking the loop that serves the stand-in services."""
    return await asyncio.to_thread(relay, tmp, *args, env=env)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "ping.yaml").write_text(FLOW)
    return tmp_path


async def test_run_waits_for_approval_then_cli_approval_and_worker_finish(workdir: Path) -> None:
    async with DemoServices() as services:
        env = {"ECHO_URL": services.base_url}
        started = await in_thread(workdir, "run", "ping", "n=3", "--as", "U0ALICE", env=env)
        assert started.returncode == 0, started.stderr
        assert "✓ call" in started.stdout
        assert "waiting" in started.stdout
        run_id = started.stdout.split()[1]

        refused = await in_thread(workdir, "approve", run_id, "ok", "--as", "U0ALICE", env=env)
        assert refused.returncode == 1
        assert "not one of the approvers" in refused.stderr

        approved = await in_thread(workdir, "approve", run_id, "ok", "--as", "U0BOB", env=env)
        assert approved.returncode == 0, approved.stderr

        worker = await in_thread(workdir, "worker", "--drain", env=env)
        assert worker.returncode == 0, worker.stderr

        shown = await in_thread(workdir, "show", run_id[:6], env=env)
        assert shown.returncode == 0, shown.stderr
        assert f"Run {run_id}  ping  succeeded" in shown.stdout
        assert "s3cret-token-value" not in shown.stdout
        assert "vote.approved" in shown.stdout
        assert [r.headers.get("Idempotency-Key") for r in services.requests("/echo")].count(
            None
        ) == 0

        verified = await in_thread(workdir, "audit", "verify", env=env)
        assert verified.returncode == 0
        assert "0 with a broken audit chain" in verified.stdout

    with sqlite3.connect(workdir / "relay.db") as db:
        db.execute("update audit set actor = 'U0MALLORY' where seq = 2")
    tampered = relay(workdir, "audit", "verify")
    assert tampered.returncode == 1
    assert f"run {run_id}: entry 2" in tampered.stdout


def test_dry_run_calls_nothing_and_masks_secrets(workdir: Path) -> None:
    ran = relay(workdir, "run", "ping", "n=1", "--as", "U0ALICE", "--dry-run")
    assert ran.returncode == 0, ran.stderr
    assert "nothing will be called" in ran.stdout
    assert "***" in ran.stdout
    assert "s3cret-token-value" not in ran.stdout


def test_bad_input_is_one_line_and_writes_nothing(workdir: Path) -> None:
    bad = relay(workdir, "run", "ping", "n=zero", "--as", "U0ALICE")
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("relay: invalid inputs: n:")
    assert "Traceback" not in bad.stderr
    with sqlite3.connect(workdir / "relay.db") as db:
        assert db.execute("select count(*) from runs").fetchone() == (0,)

    denied = relay(workdir, "run", "ping", "n=1", "--as", "U0MALLORY")
    assert denied.returncode == 1
    assert "may not run `ping`" in denied.stderr

    unknown = relay(workdir, "run", "pong")
    assert unknown.returncode == 2
    assert "did you mean `ping`" in unknown.stderr

    missing = relay(workdir, "show", "zzzzzz")
    assert missing.returncode == 2
    assert missing.stderr.startswith("relay: ")
