"""The `relay` command as a user runs it: real subprocesses, a real SQLite file, real services."""

from __future__ import annotations

import asyncio
import os
import select
import sqlite3
import subprocess
import sys
import time
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


SHIP = """
name: ship
steps:
  - id: ok
    kind: approval
    question: "Ship it?"
    approvers: {users: [U0BOB]}
    allow_requester: true
  - id: tell
    kind: notify
    text: shipped
"""


def relay_environ(tmp: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment `relay` runs with in ``tmp``: its database and flows, no CI."""
    environ = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp / 'relay.db'}",
        "RELAY_FLOWS_DIR": str(tmp / "flows"),
        "PING_TOKEN": "s3cret-token-value",
        **(env or {}),
    }
    # CI=true means no one at the terminal: `relay run` would never ask.
    environ.pop("CI", None)
    return environ


def relay(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        capture_output=True,
        text=True,
        env=relay_environ(tmp, env),
        cwd=tmp,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def relay_at_terminal(tmp: Path, *args: str, answers: list[tuple[str, str]]) -> tuple[int, str]:
    """Run `relay` on a pseudo-terminal, typing each answer once its prompt shows.

    Returns the exit code and everything the terminal showed (typed answers
    echoed). A prompt that never comes fails the test with what was shown.
    """
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "bot", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=relay_environ(tmp),
        cwd=tmp,
    )
    os.close(slave)
    shown, looked_from = b"", 0
    pending = list(answers)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                return process.wait(timeout=10), shown.decode()
            shown += chunk
            if pending and pending[0][0].encode() in shown[looked_from:]:
                looked_from = len(shown)
                os.write(master, pending.pop(0)[1].encode() + b"\n")
        process.kill()
        raise AssertionError(f"relay did not finish at the terminal; it showed:\n{shown.decode()}")
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait()


async def in_thread(
    tmp: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `relay` without blocking the loop that serves the stand-in services."""
    return await asyncio.to_thread(relay, tmp, *args, env=env)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "ping.yaml").write_text(FLOW)
    (tmp_path / "flows" / "ship.yaml").write_text(SHIP)
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


async def test_approve_all_approves_as_the_approvers_the_step_names(workdir: Path) -> None:
    async with DemoServices() as services:
        env = {"ECHO_URL": services.base_url}
        # Alice may start `ping` but not approve it: the approval is Bob's.
        ran = await in_thread(
            workdir, "run", "ping", "n=2", "--as", "U0ALICE", "--approve-all", env=env
        )
        assert ran.returncode == 0, ran.stderr
        assert "✓ ok" in ran.stdout
        run_id = ran.stdout.split()[1]
        assert f"Run {run_id} succeeded" in ran.stdout

        shown = await in_thread(workdir, "show", run_id, env=env)
    assert "U0BOB" in shown.stdout
    assert "vote.approved" in shown.stdout
    assert "U0ALICE        vote" not in shown.stdout


def test_approve_all_finds_a_group_approver_in_the_directory_file(workdir: Path) -> None:
    (workdir / "flows" / "ops.yaml").write_text(
        SHIP.replace("name: ship", "name: ops").replace("users: [U0BOB]", "groups: [S0OPS]")
    )
    unknown = relay(workdir, "run", "ops", "--as", "U0ALICE", "--approve-all")
    assert unknown.returncode == 0, unknown.stderr
    assert "no approver of this step is known here" in unknown.stdout
    assert "is waiting" in unknown.stdout

    (workdir / "directory.yaml").write_text("S0OPS: [U0CAROL]\n")
    env = {"RELAY_DIRECTORY_FILE": str(workdir / "directory.yaml")}
    ran = relay(workdir, "run", "ops", "--as", "U0ALICE", "--approve-all", env=env)
    assert ran.returncode == 0, ran.stderr
    assert "succeeded in" in ran.stdout
    run_id = ran.stdout.split()[1]
    assert "U0CAROL" in relay(workdir, "show", run_id).stdout


def test_the_person_at_the_terminal_answers_the_approval(workdir: Path) -> None:
    code, shown = relay_at_terminal(
        workdir,
        "run",
        "ship",
        "--as",
        "U0BOB",
        answers=[("approve? [y/n", "y"), ("reason (optional): ", "looks right")],
    )
    assert code == 0, shown
    assert "? Ship it?" in shown
    assert "who may decide: U0BOB (1 needed)" in shown
    assert "→ thread: shipped" in shown
    assert "succeeded in" in shown

    run_id = shown.split("Run ", 1)[1].split()[0]
    details = relay(workdir, "show", run_id)
    assert "vote.approved" in details.stdout
    assert "looks right" in details.stdout


def test_enter_at_the_prompt_leaves_the_approval_waiting(workdir: Path) -> None:
    code, shown = relay_at_terminal(
        workdir, "run", "ship", "--as", "U0BOB", answers=[("approve? [y/n", "")]
    )
    assert code == 0, shown
    run_id = shown.split("Run ", 1)[1].split()[0]
    assert f"left waiting: relay approve {run_id} ok --as USER" in shown
    assert f"Run {run_id} is waiting" in shown
    with sqlite3.connect(workdir / "relay.db") as db:
        assert db.execute("select state from runs").fetchall() == [("waiting",)]
        assert db.execute("select count(*) from votes").fetchone() == (0,)


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
