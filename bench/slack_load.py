"""Slack load: how fast ``relay serve`` acknowledges a burst of signed requests.

Setup, once: ``relay serve`` runs as a real process (``python -m bot serve``) on a
fresh SQLite file, talking to a ``FakeSlack`` (a thread of this process) and to
a stand-in HTTP service in a child process whose ``/echo`` route holds every
request for ``SLOW_SECONDS``. The flow under load calls that route, then asks
for one approval on a card in ``C0APPROVE``.

Each round fires one burst of 100 requests at once, signed as Slack signs them,
from a second child process (so neither the fake nor this loop's polling
shares an interpreter with the client doing the timing):

- 50 ``/relay run slack-load token=…`` commands, each with its own
  ``trigger_id``, ``response_url`` and a token unique to that command;
- 50 Approve clicks on the cards the previous burst (or the warm-up) left
  waiting, while the 50 new runs sit in their slow HTTP step.

Then it replays 10 of those commands and 10 of those clicks byte for byte
(same timestamp and signature, as a replay within Slack's 5 minutes would be),
waits for the work to settle and checks, from the fake and from the SQLite file
read directly: every request got HTTP 200, each ``response_url`` was answered
exactly once, each command's token is in exactly one run, each clicked
approval has exactly one vote and is approved, the clicked runs finished, and
no run's HTTP step was sent twice (an abandoned first attempt).

Measured: the acknowledgement latency of each request as the client sees it
(request written on an open connection to response read), p50 / p99 / max per
round, for commands, clicks and both, beside the harness's own floor (the same
burst against an aiohttp route that answers at once) and the time from the
burst to the last new card. Target: p99 <= 50 ms, none over 3 s (Slack's limit), no
request answered twice, every run started exactly once.

``relay serve`` runs with ``--processes 2`` by default, one per core of this
machine, as the README advises for production; the second argument changes it
(``1`` measures a lone process).

Run: ``PYTHONPATH=. .venv/bin/python bench/slack_load.py [rounds] [processes]``
(default 5 rounds, 2 processes).
Writes ``bench/results/slack_load.json``; exit 1 if a correctness check fails.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.common import median, table, write_json
from tests.fakeslack import FakeSlack, block_actions, slash_command
from tests.fakeslack.requests import SlackRequest, sign

ROOT = Path(__file__).resolve().parents[1]
FLOW = "slack-load"
BURST = 50
"""Commands per burst, and clicks per burst."""
REPLAYS = 10
"""Commands (and clicks) re-sent byte for byte after each burst."""
SLOW_SECONDS = 1.5
"""How long the stand-in service holds each HTTP step."""
TARGET_P99_MS = 50.0
SLACK_LIMIT_S = 3.0
SETTLE_S = 120.0
"""Long enough for a stranded step's 30 s lease to lapse and the step to run again."""
SECRET = "bench-signing-secret"
SLACK_PATH = "/slack/events"

RUNNER = "U0RUNNER"
APPROVERS = tuple(f"U0APPROVER{n}" for n in range(3))
CHANNEL = "C0LOAD"
CARDS = "C0APPROVE"
ALERTS = "C0ALERTS"
APPROVE = "relay_approve"


def flow_yaml(service_url: str) -> str:
    """One slow HTTP step, then one approval any of ``APPROVERS`` may give."""
    return f"""\
name: {FLOW}
description: A slow HTTP call, then one approval.
permissions:
  run: {{users: [{RUNNER}]}}
alerts: {{channel: {ALERTS}}}
inputs:
  token: {{type: string, required: true, max_length: 80}}
steps:
  - id: call
    kind: http
    method: POST
    url: "{service_url}/echo"
    json: {{token: "{{{{ inputs.token }}}}"}}
    retry: {{attempts: 1}}
  - id: go
    kind: approval
    question: "Ship {{{{ inputs.token }}}}?"
    approvers: {{users: [{", ".join(APPROVERS)}]}}
    channel: {CARDS}
"""


# ---------------------------------------------------------------- child processes


def _slow_service(ports: multiprocessing.Queue[int], seconds: float) -> None:
    from bot.demo.services import DemoServices

    async def main() -> None:
        async with DemoServices() as services:
            services.delay("/echo", seconds)
            ports.put(int(services.base_url.rsplit(":", 1)[1]))
            await asyncio.Event().wait()

    asyncio.run(main())


@contextmanager
def slow_service() -> Iterator[str]:
    """The demo stand-in services in a child process, ``/echo`` slowed; yields the base URL."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = context.Queue()
    process = context.Process(target=_slow_service, args=(ports, SLOW_SECONDS), daemon=True)
    process.start()
    try:
        yield f"http://127.0.0.1:{ports.get(timeout=30)}"
    finally:
        process.terminate()
        process.join()


@dataclass(frozen=True)
class Shot:
    """One request to fire: the body, and the timestamp to sign with (None: now)."""

    body: bytes
    content_type: str
    timestamp: int | None = None


@dataclass(frozen=True)
class Hit:
    """What the client saw: status, ack latency in seconds, body length, timestamp signed."""

    status: int
    elapsed: float
    body_length: int
    timestamp: int


def fire(url: str, secret: str, shots: Sequence[Shot]) -> list[Hit]:
    """Send every shot at once, each on its own open connection; runs in the sender process.

    The connections are opened first, as Slack's pool would hold them, and the
    requests are raw HTTP/1.1 bytes: an HTTP client library in this loop would
    add its own queueing to every figure (httpx took ~180 ms to get 100
    requests out and back from a server that answers at once). The clock runs
    from the write of a request to the last byte of its answer.
    """
    target = urlsplit(url)
    host, port = target.hostname or "127.0.0.1", target.port or 80

    async def one(
        shot: Shot, stream: tuple[asyncio.StreamReader, asyncio.StreamWriter], go: asyncio.Event
    ) -> Hit:
        reader, writer = stream
        stamp = shot.timestamp if shot.timestamp is not None else int(time.time())
        headers = {
            "Host": f"{host}:{port}",
            "Content-Length": str(len(shot.body)),
            **sign(shot.body, secret, stamp, content_type=shot.content_type),
        }
        head = f"POST {target.path} HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        data = head.encode() + b"\r\n" + shot.body
        await go.wait()
        began = time.perf_counter()
        writer.write(data)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
        elapsed = time.perf_counter() - began
        writer.close()
        return Hit(status, elapsed, len(body), stamp)

    async def main() -> list[Hit]:
        streams = [await asyncio.open_connection(host, port) for _ in shots]
        go = asyncio.Event()
        tasks = [
            asyncio.create_task(one(shot, stream, go))
            for shot, stream in zip(shots, streams, strict=True)
        ]
        await asyncio.sleep(0.05)  # every request signed and parked on the event
        go.set()
        return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


def _null_server(ports: multiprocessing.Queue[int]) -> None:
    from aiohttp import web

    async def empty(_: web.Request) -> web.Response:
        return web.Response()

    async def main() -> None:
        app = web.Application()
        app.router.add_post(SLACK_PATH, empty)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        ports.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


async def harness_floor(pool: ProcessPoolExecutor, shot: Shot) -> dict[str, float]:
    """The same burst against an aiohttp route that answers at once: the figures' floor."""
    context = multiprocessing.get_context("spawn")
    ports: multiprocessing.Queue[int] = context.Queue()
    process = context.Process(target=_null_server, args=(ports,), daemon=True)
    process.start()
    try:
        url = f"http://127.0.0.1:{ports.get(timeout=30)}{SLACK_PATH}"
        loop = asyncio.get_running_loop()
        elapsed: list[float] = []
        for _ in range(3):
            hits = await loop.run_in_executor(pool, fire, url, SECRET, [shot] * (2 * BURST))
            elapsed += [hit.elapsed for hit in hits]
        return figures(elapsed)
    finally:
        process.terminate()
        process.join()


# ---------------------------------------------------------------- relay serve


@dataclass
class Serve:
    """The ``relay serve`` process and where to find it."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    database: Path


def _environ(workdir: Path, fake: FakeSlack, service_url: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLACK_", "RELAY_", "DATABASE_")) and key != "PORT"
    }
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=f"sqlite:///{workdir / 'relay.db'}",
        RELAY_FLOWS_DIR=str(workdir / "flows"),
        RELAY_ALERT_CHANNEL=ALERTS,
        SLACK_BOT_TOKEN=fake.bot_token,
        SLACK_SIGNING_SECRET=SECRET,
        SLACK_API_URL=fake.api_url,
    )
    return env


@contextmanager
def relay_serve(
    workdir: Path, fake: FakeSlack, service_url: str, processes: int
) -> Iterator[Serve]:
    """Start ``python -m bot serve --port 0`` in ``workdir``; stop it with SIGTERM."""
    flows = workdir / "flows"
    flows.mkdir()
    (flows / f"{FLOW}.yaml").write_text(flow_yaml(service_url), encoding="utf-8")
    log = workdir / "serve.log"
    command = ["serve", "--host", "127.0.0.1", "--port", "0", "--processes", str(processes)]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "bot", *command],
            cwd=workdir,  # no stray .env
            env=_environ(workdir, fake, service_url),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        url = ""
        while not url:
            found = re.search(r"serving Slack on (\S+);", log.read_text(errors="replace"))
            url = found.group(1) if found else ""
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"relay serve did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield Serve(process=process, url=url, log=log, database=workdir / "relay.db")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- reading state


def query(database: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """Read the serve process's SQLite file directly (WAL: readers never block it)."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


def runs_by_token(database: Path) -> dict[str, list[tuple[str, str]]]:
    """Every run of the flow: token → [(run id, state)]."""
    found: dict[str, list[tuple[str, str]]] = {}
    for run_id, state, inputs in query(
        database, "SELECT id, state, inputs FROM runs WHERE flow = ?", FLOW
    ):
        found.setdefault(json.loads(inputs)["token"], []).append((run_id, state))
    return found


def waiting_cards(fake: FakeSlack) -> dict[str, dict[str, Any]]:
    """Run id → its approval card, for every card still showing an Approve button."""
    cards: dict[str, dict[str, Any]] = {}
    for message in fake.messages(CARDS):
        for block in message.get("blocks", []):
            for element in [*block.get("elements", []), block.get("accessory") or {}]:
                if isinstance(element, dict) and element.get("action_id") == APPROVE:
                    cards[str(element["value"]).partition("|")[0]] = message
    return cards


async def until(what: str, check: Any, within: float = SETTLE_S) -> Any:
    """Poll ``check()`` until truthy; SystemExit naming ``what`` when it never is."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.1)


# ---------------------------------------------------------------- one round


@dataclass
class Round:
    """The figures and the checks of one burst."""

    commands: list[float] = field(default_factory=list)
    clicks: list[float] = field(default_factory=list)
    replays: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    settle_s: float = 0.0
    """From the burst to the last new card posted."""
    rerun: int = 0
    """HTTP steps of this burst's runs that took more than one attempt."""
    problems: list[str] = field(default_factory=list)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile, interpolated between the two nearest ranks."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def figures(values: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds."""
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 2),
        "p99_ms": round(percentile(values, 99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def commands(fake: FakeSlack, label: str, count: int) -> tuple[list[SlackRequest], list[str]]:
    """``count`` run commands with unique tokens; returns them and their response_urls."""
    requests, urls = [], []
    for index in range(count):
        url = fake.response_url(channel=CHANNEL, user=RUNNER)
        requests.append(
            slash_command(
                text=f"run {FLOW} token={label}-{index:03d}",
                user_id=RUNNER,
                user_name="runner",
                channel_id=CHANNEL,
                fake=fake,
                response_url=url,
            )
        )
        urls.append(url)
    return requests, urls


def clicks(
    fake: FakeSlack, cards: Sequence[dict[str, Any]]
) -> tuple[list[SlackRequest], list[str]]:
    """One Approve click per card, by approvers in turn; returns them and their response_urls."""
    requests, urls = [], []
    for index, card in enumerate(cards):
        user = APPROVERS[index % len(APPROVERS)]
        url = fake.response_url(channel=CARDS, user=user, message_ts=card["ts"])
        requests.append(
            block_actions(
                action_id=APPROVE,
                message_ts=card["ts"],
                channel_id=CARDS,
                user_id=user,
                user_name=user.lower(),
                fake=fake,
                response_url=url,
            )
        )
        urls.append(url)
    return requests, urls


async def start_batch(
    fake: FakeSlack, serve: Serve, pool: ProcessPoolExecutor, label: str
) -> tuple[list[str], dict[str, Any]]:
    """Warm-up: start ``BURST`` runs and wait for their cards; returns their tokens."""
    started = time.monotonic()
    requests, _ = commands(fake, label, BURST)
    shots = [Shot(r.body, r.content_type) for r in requests]
    hits = await asyncio.get_running_loop().run_in_executor(pool, fire, serve.url, SECRET, shots)
    if any(hit.status != 200 for hit in hits):
        raise SystemExit(f"warm-up commands answered {Counter(hit.status for hit in hits)}")
    tokens = [f"{label}-{index:03d}" for index in range(BURST)]
    await settle_waiting(fake, serve, tokens)
    rerun = reruns(serve.database, tokens)
    info = {
        "ack": figures([hit.elapsed for hit in hits]),
        "settle_s": round(time.monotonic() - started, 2),
        "http_steps_rerun": len(rerun),
        "first_attempt_errors": dict(Counter(error for _, _, error in rerun)),
    }
    print(
        f"warm-up: {BURST} cards after {info['settle_s']:.1f} s; {len(rerun)} HTTP steps ran twice",
        flush=True,
    )
    return tokens, info


async def settle_waiting(fake: FakeSlack, serve: Serve, tokens: Sequence[str]) -> None:
    """Wait until every run of ``tokens`` has its card posted."""

    def ready() -> bool:
        found = runs_by_token(serve.database)
        cards = waiting_cards(fake)
        return all(
            token in found and all(run_id in cards for run_id, _ in found[token])
            for token in tokens
        )

    await until(f"{len(tokens)} approval cards", ready)


async def one_round(
    number: int,
    fake: FakeSlack,
    serve: Serve,
    pool: ProcessPoolExecutor,
    waiting: Sequence[str],
) -> tuple[Round, list[str]]:
    """Burst, replay, settle, check; returns the figures and the runs now waiting."""
    result = Round()
    label = f"r{number}"
    before = runs_by_token(serve.database)
    targets = [before[token][0][0] for token in waiting]
    cards = waiting_cards(fake)
    command_requests, command_urls = commands(fake, label, BURST)
    click_requests, click_urls = clicks(fake, [cards[run_id] for run_id in targets])
    burst = [*command_requests, *click_requests]
    # Interleave commands and clicks, so neither kind is always first in line.
    order = [i for pair in zip(range(BURST), range(BURST, 2 * BURST), strict=True) for i in pair]
    shots = [Shot(burst[i].body, burst[i].content_type) for i in order]
    loop = asyncio.get_running_loop()
    fired = time.monotonic()
    hits_in_order = await loop.run_in_executor(pool, fire, serve.url, SECRET, shots)
    hits = [hits_in_order[order.index(i)] for i in range(2 * BURST)]
    result.commands = [hit.elapsed for hit in hits[:BURST]]
    result.clicks = [hit.elapsed for hit in hits[BURST:]]
    result.statuses.update(hit.status for hit in hits)

    # Replay the first REPLAYS of each kind exactly as sent: same timestamp, same signature.
    again = [*range(REPLAYS), *range(BURST, BURST + REPLAYS)]
    replay_shots = [Shot(burst[i].body, burst[i].content_type, hits[i].timestamp) for i in again]
    replayed = await loop.run_in_executor(pool, fire, serve.url, SECRET, replay_shots)
    result.replays = [hit.elapsed for hit in replayed]
    result.statuses.update(hit.status for hit in replayed)

    tokens = [f"{label}-{index:03d}" for index in range(BURST)]
    await settle_waiting(fake, serve, tokens)
    result.settle_s = time.monotonic() - fired

    def clicked_done() -> bool:
        states = dict(query(serve.database, "SELECT id, state FROM runs WHERE flow = ?", FLOW))
        return all(states.get(run_id) == "succeeded" for run_id in targets)

    try:
        await until("the clicked runs to succeed", clicked_done, within=30)
    except SystemExit as exc:
        result.problems.append(str(exc))
    await until(
        "an answer on every response_url",
        lambda: all(fake.responses(url) for url in [*command_urls, *click_urls]),
    )
    await asyncio.sleep(1.0)  # a second answer, if any, has time to land
    result.problems += check(fake, serve, tokens, targets, command_urls, click_urls, hits)
    result.rerun = len(reruns(serve.database, tokens))
    if result.rerun:
        result.problems.append(
            f"{result.rerun} HTTP steps sent again after their first attempt was abandoned"
        )
    return result, tokens


def reruns(database: Path, tokens: Sequence[str]) -> list[tuple[str, int, str]]:
    """(run id, attempts, first attempt's error) of each run of ``tokens`` whose step re-ran."""
    wanted = set(tokens)
    found = []
    for run_id, inputs, count, error in query(
        database,
        "SELECT r.id, r.inputs, count(*), min(CASE WHEN a.number = 1 THEN a.error END) "
        "FROM runs r JOIN attempts a ON a.run_id = r.id AND a.step_key = 'call' "
        "WHERE r.flow = ? GROUP BY r.id",
        FLOW,
    ):
        if json.loads(inputs)["token"] in wanted and count > 1:
            found.append((run_id, count, str(error)))
    return found


def check(
    fake: FakeSlack,
    serve: Serve,
    tokens: Sequence[str],
    targets: Sequence[str],
    command_urls: Sequence[str],
    click_urls: Sequence[str],
    hits: Sequence[Hit],
) -> list[str]:
    """Every correctness rule of the spec; each broken one becomes a line."""
    problems = []
    bad = [hit for hit in hits if hit.status != 200]
    if bad:
        problems.append(f"{len(bad)} requests not acknowledged with 200")
    slow = [hit for hit in hits if hit.elapsed > SLACK_LIMIT_S]
    if slow:
        problems.append(f"{len(slow)} acknowledged after Slack's {SLACK_LIMIT_S:.0f} s")
    for kind, urls in (("command", command_urls), ("click", click_urls)):
        counts = Counter(len(fake.responses(url)) for url in urls)
        if set(counts) != {1}:
            problems.append(f"{kind} response_urls answered n times → how many: {dict(counts)}")
        started = sum("Started" in json.dumps(fake.responses(url)) for url in urls)
        if kind == "command" and started != len(urls):
            problems.append(f"only {started} of {len(urls)} commands answered 'Started'")
    found = runs_by_token(serve.database)
    counts = Counter(len(found.get(token, [])) for token in tokens)
    if set(counts) != {1}:
        problems.append(f"runs per command token → how many tokens: {dict(counts)}")
    marks = ",".join("?" * len(targets))
    votes = dict(
        query(
            serve.database,
            f"SELECT run_id, count(*) FROM votes WHERE run_id IN ({marks}) GROUP BY run_id",
            *targets,
        )
    )
    decided = dict(
        query(
            serve.database,
            f"SELECT run_id, state FROM approvals WHERE run_id IN ({marks})",
            *targets,
        )
    )
    vote_counts = Counter(votes.get(run_id, 0) for run_id in targets)
    if set(vote_counts) != {1}:
        problems.append(f"votes per clicked approval → how many: {dict(vote_counts)}")
    states = Counter(decided.get(run_id) for run_id in targets)
    if set(states) != {"approved"}:
        problems.append(f"clicked approvals in states {dict(states)}")
    return problems


# ---------------------------------------------------------------- main


def log_problems(log: Path) -> list[str]:
    """Warnings and errors ``relay serve`` logged (first line of each)."""
    return [
        line
        for line in log.read_text(errors="replace").splitlines()
        if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", line)
    ]


async def main(rounds: int, processes: int) -> int:
    users = [RUNNER, *APPROVERS]
    with (
        tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp,
        slow_service() as service_url,
        FakeSlack(users=users, channels=(CHANNEL, CARDS, ALERTS)) as fake,
        relay_serve(Path(tmp), fake, service_url, processes) as serve,
        ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool,
    ):
        print(
            f"relay serve pid {serve.process.pid} on {serve.url}, {processes} process(es)",
            flush=True,
        )
        probe = slash_command(text="help", user_id=RUNNER, channel_id=CHANNEL)
        floor = await harness_floor(pool, Shot(probe.body, probe.content_type))
        print(
            f"harness floor ({2 * BURST} at once, answered at once): "
            f"p50 {floor['p50_ms']:.1f} ms, p99 {floor['p99_ms']:.1f} ms",
            flush=True,
        )
        waiting, warm_up = await start_batch(fake, serve, pool, "warm")
        results: list[Round] = []
        for number in range(1, rounds + 1):
            result, waiting = await one_round(number, fake, serve, pool, waiting)
            results.append(result)
            both = figures([*result.commands, *result.clicks])
            print(
                f"round {number}: p50 {both['p50_ms']:.1f} ms, p99 {both['p99_ms']:.1f} ms, "
                f"max {both['max_ms']:.1f} ms, {len(result.problems)} problems",
                flush=True,
            )
        logged = log_problems(serve.log)
    return report(results, floor, warm_up, logged, processes)


def report(
    results: Sequence[Round],
    floor: dict[str, float],
    warm_up: dict[str, Any],
    logged: Sequence[str],
    processes: int,
) -> int:
    """Print the table and the verdict, write the JSON; 1 if a correctness check failed."""
    rows = []
    per_round = []
    for number, result in enumerate(results, 1):
        entry = {
            "round": number,
            "commands": figures(result.commands),
            "clicks": figures(result.clicks),
            "all": figures([*result.commands, *result.clicks]),
            "replays": figures(result.replays),
            "statuses": {str(k): v for k, v in sorted(result.statuses.items())},
            "settle_s": round(result.settle_s, 2),
            "http_steps_rerun": result.rerun,
            "problems": result.problems,
        }
        per_round.append(entry)
        rows.append(
            [
                str(number),
                *(f"{entry['all'][key]:.1f}" for key in ("p50_ms", "p99_ms", "max_ms")),
                f"{entry['commands']['p99_ms']:.1f}",
                f"{entry['clicks']['p99_ms']:.1f}",
                f"{entry['replays']['max_ms']:.1f}",
                " ".join(f"{k}x{v}" for k, v in entry["statuses"].items()),
                f"{result.settle_s:.1f}",
                str(result.rerun),
                str(len(result.problems)),
            ]
        )
    medians = {
        key: median([entry["all"][key] for entry in per_round])
        for key in ("p50_ms", "p99_ms", "max_ms")
    }
    pooled = figures([t for r in results for t in (*r.commands, *r.clicks)])
    rows.append(
        [
            "median",
            *(f"{medians[key]:.1f}" for key in ("p50_ms", "p99_ms", "max_ms")),
            f"{median([e['commands']['p99_ms'] for e in per_round]):.1f}",
            f"{median([e['clicks']['p99_ms'] for e in per_round]):.1f}",
            f"{median([e['replays']['max_ms'] for e in per_round]):.1f}",
            "",
            f"{median([r.settle_s for r in results]):.1f}",
            "",
            "",
        ]
    )
    table(
        f"Ack latency (ms) of {BURST} commands + {BURST} clicks fired at once "
        f"at {processes} serving process(es), "
        f"HTTP steps held {SLOW_SECONDS} s; {REPLAYS}+{REPLAYS} replays after each burst",
        [
            "round",
            "p50",
            "p99",
            "max",
            "cmd p99",
            "click p99",
            "replay max",
            "HTTP",
            "settle s",
            "re-run",
            "problems",
        ],
        rows,
    )
    problems = [f"round {e['round']}: {p}" for e in per_round for p in e["problems"]]
    over = sum(t > SLACK_LIMIT_S for r in results for t in (*r.commands, *r.clicks, *r.replays))
    met = medians["p99_ms"] <= TARGET_P99_MS and not over and not problems
    print(
        f"pooled over {len(results)} rounds: p50 {pooled['p50_ms']:.1f} ms, "
        f"p99 {pooled['p99_ms']:.1f} ms, max {pooled['max_ms']:.1f} ms; "
        f"target p99 <= {TARGET_P99_MS:.0f} ms, none over {SLACK_LIMIT_S:.0f} s: "
        f"{'met' if met else 'NOT met'}"
    )
    for line in problems:
        print(f"  ! {line}")
    if logged:
        print(f"relay serve logged {len(logged)} warnings or errors; first: {logged[0]}")
    write_json(
        "slack_load",
        {
            "burst": {"commands": BURST, "clicks": BURST, "replays": REPLAYS},
            "serve_processes": processes,
            "slow_step_seconds": SLOW_SECONDS,
            "target": {"p99_ms": TARGET_P99_MS, "max_s": SLACK_LIMIT_S},
            "median": medians,
            "pooled": pooled,
            "over_3s": over,
            "target_met": met,
            "harness_floor": floor,
            "warm_up": warm_up,
            "rounds": per_round,
            "serve_log_problems": list(logged[:20]),
        },
    )
    return 0 if not problems else 1


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    processes = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    sys.exit(asyncio.run(main(count, processes)))
