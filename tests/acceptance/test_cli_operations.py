"""Operating runs from the shell: `relay runs`, reject, cancel, retry, skip, a worker left on.

Each command runs as a real subprocess on a real SQLite file, as an operator
types it; the stand-in services answer the HTTP steps.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bot.demo.services import DemoServices
from tests.acceptance.test_cli_runs import SHIP, in_thread, relay, relay_environ

FLAKY = """
name: flaky
permissions:
  operate: {users: [U0OPS]}
services:
  echo: {env: ECHO_URL}
steps:
  - id: call
    kind: http
    service: echo
    path: /echo
    retry: {attempts: 1}
  - id: after
    kind: notify
    text: carried on
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "flaky.yaml").write_text(FLAKY)
    (tmp_path / "flows" / "ship.yaml").write_text(SHIP)
    return tmp_path


def run_state(workdir: Path, run_id: str) -> str:
    with sqlite3.connect(workdir / "relay.db") as db:
        return str(db.execute("select state from runs where id = ?", (run_id,)).fetchone()[0])


def started(result: subprocess.CompletedProcess[str]) -> str:
    """The run id `relay run` printed first."""
    first = result.stdout.splitlines()[0]
    assert first.startswith("Run "), result.stdout + result.stderr
    return first.split()[1]


async def test_an_operator_retries_then_skips_a_failed_step(workdir: Path) -> None:
    async with DemoServices() as services:
        env = {"ECHO_URL": services.base_url}
        services.fail("/echo", status=500, times=2)
        ran = await in_thread(workdir, "run", "flaky", env=env)
        assert ran.returncode == 1
        run_id = started(ran)
        assert f"ALERT flaky run {run_id}: step call failed for good" in ran.stdout
        assert run_state(workdir, run_id) == "failed"

        refused = await in_thread(workdir, "retry", run_id, "--as", "U0MALLORY", env=env)
        assert refused.returncode == 1
        assert refused.stderr.count("\n") == 1
        assert refused.stderr.startswith("relay: you may not retry runs of `flaky`")
        assert run_state(workdir, run_id) == "failed"

        retried = await in_thread(workdir, "retry", run_id, "--as", "U0OPS", env=env)
        assert retried.returncode == 0, retried.stderr
        assert "retrying from call" in retried.stdout
        await in_thread(workdir, "worker", "--drain", env=env)
        assert run_state(workdir, run_id) == "failed"
        assert len(services.requests("/echo")) == 2

        skipped = await in_thread(workdir, "skip", run_id, "call", "--as", "U0OPS", env=env)
        assert skipped.returncode == 0, skipped.stderr
        assert "skipped call" in skipped.stdout
        drained = await in_thread(workdir, "worker", "--drain", env=env)
        assert drained.returncode == 0, drained.stderr
        assert "carried on" in drained.stdout
        assert run_state(workdir, run_id) == "succeeded"
        assert len(services.requests("/echo")) == 2

        shown = await in_thread(workdir, "show", run_id, env=env)
    assert "U0OPS" in shown.stdout
    assert "run.retry" in shown.stdout
    assert "step.skip" in shown.stdout


def test_reject_with_a_reason_and_cancel(workdir: Path) -> None:
    first = started(relay(workdir, "run", "ship"))
    second = started(relay(workdir, "run", "ship"))
    assert run_state(workdir, first) == run_state(workdir, second) == "waiting"

    rejected = relay(workdir, "reject", first, "ok", "--as", "U0BOB", "--reason", "not today")
    assert rejected.returncode == 0, rejected.stderr
    assert run_state(workdir, first) == "failed"
    assert "not today" in relay(workdir, "show", first).stdout

    cancelled = relay(workdir, "cancel", second, "--reason", "wrong address")
    assert cancelled.returncode == 0, cancelled.stderr
    assert "the run is cancelled" in cancelled.stdout
    relay(workdir, "worker", "--drain")
    assert run_state(workdir, second) == "cancelled"
    assert "wrong address" in relay(workdir, "show", second).stdout

    again = relay(workdir, "approve", second, "ok", "--as", "U0BOB")
    assert again.returncode == 1
    assert again.stderr.startswith("relay: ")
    assert run_state(workdir, second) == "cancelled"


def test_runs_lists_and_filters(workdir: Path) -> None:
    assert relay(workdir, "runs").stdout == "no runs yet\n"
    waiting = started(relay(workdir, "run", "ship"))
    rejected = started(relay(workdir, "run", "ship"))
    relay(workdir, "reject", rejected, "ok", "--as", "U0BOB", "--reason", "no")

    listed = relay(workdir, "runs")
    assert listed.returncode == 0, listed.stderr
    assert waiting in listed.stdout and rejected in listed.stdout

    only_waiting = relay(workdir, "runs", "--state", "waiting").stdout
    assert waiting in only_waiting and rejected not in only_waiting
    both = relay(workdir, "runs", "--state", "waiting", "--state", "failed").stdout
    assert waiting in both and rejected in both
    assert relay(workdir, "runs", "--flow", "flaky").stdout == "no runs match\n"
    assert len(relay(workdir, "runs", "--limit", "1").stdout.strip().splitlines()) < len(
        listed.stdout.strip().splitlines()
    )

    bad = relay(workdir, "runs", "--state", "sleeping")
    assert bad.returncode == 2
    assert "invalid choice: 'sleeping'" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = relay(workdir, "run")
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[-1].endswith("the following arguments are required: flow")
    negative = relay(workdir, "runs", "--limit", "-1")
    assert negative.returncode == 2
    assert "expected a whole number of 1 or more, got '-1'" in negative.stderr


def test_a_worker_left_running_finishes_approved_runs_and_stops_on_sigterm(
    workdir: Path,
) -> None:
    run_id = started(relay(workdir, "run", "ship"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"],
        cwd=workdir,
        env=relay_environ(workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        approved = relay(workdir, "approve", run_id, "ok", "--as", "U0BOB")
        assert approved.returncode == 0, approved.stderr
        deadline = time.monotonic() + 30
        while run_state(workdir, run_id) != "succeeded":
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker did not finish the approved run"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=15)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert "worker " in err and " started" in err
    assert "shipped" in out
    assert "Traceback" not in err
