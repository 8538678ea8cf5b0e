"""Recovery after SIGKILL: 100 runs in flight, how soon is every one moving again?

Target: with 100 runs in flight, a worker killed with SIGKILL and started again
has every run moving within 2 s, and every run finishes.

Each round commits 100 runs (a passive engine, as ``relay`` commands do) of a
flow with one slow HTTP step: the loopback service holds each call for
``HOLD`` seconds. A ``relay worker`` subprocess claims them; once the service
holds all 100 calls, the worker is SIGKILLed and a new one spawned. Measured
from that spawn:

- ready: the new worker says it started (imports, database, flows loaded);
- moving: the service has received every run's call again (same Idempotency-Key),
  i.e. the dead worker's leases were taken over and the attempts re-sent;
- finished: every run is ``succeeded`` in the database.

``finished`` includes one ``HOLD`` of the service. Results go to
``bench/results/recovery.json``.

Run: ``PYTHONPATH=. .venv/bin/python bench/recovery.py [rounds]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import IO, Any

from bot.engine.operations import Actor
from bot.settings import load_settings
from bot.terminal import TerminalChat
from bot.wiring import build_services
from tests.acceptance.counting_service import CountingService

RUNS = 100
HOLD = 3.0
TARGET = 2.0
RESULTS = Path(__file__).parent / "results"

FLOW = """
name: slow
permissions:
  run: {users: [U0BENCH]}
services:
  svc: {env: BENCH_SLOW_URL}
steps:
  - {id: call, kind: http, method: POST, service: svc, path: "/slow/{{ run.id }}", timeout: 30s}
"""


async def start_runs(workdir: Path, url: str) -> list[str]:
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{workdir / 'relay.db'}", RELAY_FLOWS_DIR=str(workdir / "flows")
    )
    async with build_services(
        settings,
        chat=TerminalChat(out=io.StringIO()),
        passive=True,
        environ={"BENCH_SLOW_URL": url},
    ) as services:
        actor = Actor(user="U0BENCH")
        return [(await services.operations.start("slow", {}, actor)).id for _ in range(RUNS)]


def spawn(workdir: Path, url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{workdir / 'relay.db'}",
        "RELAY_FLOWS_DIR": str(workdir / "flows"),
        "BENCH_SLOW_URL": url,
    }
    env.pop("CI", None)
    env.pop("RELAY_WORKER_ID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker"],
        env=env,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def watch_ready(stream: IO[bytes], ready: threading.Event, lines: list[str]) -> None:
    """Set ``ready`` at the worker's start line, then drain its output so it never blocks."""
    for line in stream:
        lines.append(line.decode(errors="replace"))
        if line.startswith(b"worker ") and b" started" in line:
            ready.set()


def watched(worker: subprocess.Popen[bytes], ready: threading.Event) -> list[str]:
    """The worker's stderr lines, collected in the background."""
    lines: list[str] = []
    assert worker.stderr is not None
    threading.Thread(target=watch_ready, args=(worker.stderr, ready, lines)).start()
    return lines


def wait(condition: Any, timeout: float, output: list[str]) -> float:
    """Poll ``condition`` until true; returns the monotonic time it became true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the worker did not get there in time:\n" + "".join(output[-30:]))
        time.sleep(0.005)
    return time.monotonic()


def succeeded(workdir: Path) -> int:
    with contextlib.closing(sqlite3.connect(workdir / "relay.db")) as db:
        return int(db.execute("select count(*) from runs where state = 'succeeded'").fetchone()[0])


def one_round() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="relay-recovery-") as name:
        return _round_in(Path(name))


def _round_in(workdir: Path) -> dict[str, float]:
    (workdir / "flows").mkdir()
    (workdir / "flows" / "slow.yaml").write_text(FLOW)
    with CountingService(hold=HOLD) as service:
        run_ids = asyncio.run(start_runs(workdir, service.url))

        def calls() -> Counter[str]:
            return Counter(a.path.rsplit("/", 1)[1] for a in service.arrivals())

        first = spawn(workdir, service.url)
        output = watched(first, threading.Event())
        wait(lambda: len(calls()) == RUNS, 60, output)
        first.send_signal(signal.SIGKILL)
        first.wait()

        ready = threading.Event()
        spawned = time.monotonic()
        second = spawn(workdir, service.url)
        output = watched(second, ready)
        try:
            started = wait(ready.is_set, 60, output)
            moving = wait(lambda: all(calls()[run] >= 2 for run in run_ids), 60, output)
            finished = wait(lambda: succeeded(workdir) == RUNS, 120, output)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=30)
    return {
        "ready_s": started - spawned,
        "moving_s": moving - spawned,
        "moving_after_ready_s": moving - started,
        "finished_s": finished - spawned,
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    results = []
    for number in range(1, rounds + 1):
        figures = one_round()
        results.append(figures)
        print(f"round {number}: " + "  ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
    print(f"\n{RUNS} runs in flight, call held {HOLD:.0f} s; seconds from the restart's spawn")
    print(f"{'':<22}{'median':>8}{'worst':>8}")
    for key, value in medians.items():
        worst = max(r[key] for r in results)
        print(f"{key:<22}{value:>8.2f}{worst:>8.2f}")
    verdict = "met" if medians["moving_s"] <= TARGET else "missed"
    print(f"target: every run moving within {TARGET:.0f} s of the restart: {verdict}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "recovery.json"
    out.write_text(
        json.dumps(
            {
                "runs": RUNS,
                "hold_s": HOLD,
                "target_moving_s": TARGET,
                "rounds": results,
                "median": medians,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "load": os.getloadavg(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
