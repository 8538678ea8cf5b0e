"""`relay serve` as an operator starts it: a real process, its messages and its signals."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bot.demo.services import DemoServices
from bot.engine.operations import Actor
from bot.settings import load_settings
from bot.terminal import TerminalChat
from bot.wiring import build_services
from tests.fakeslack import FakeSlack, url_verification

from .conftest import CHANNELS, OPS, ROOT, SECRET, write_flows


def environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SLACK_", "RELAY_")) and key not in ("CI", "PORT")
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'relay.db'}", RELAY_FLOWS_DIR=str(ROOT / "flows")
    )
    env.update(extra)
    return env


def serve_until_it_exits(
    tmp_path: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """`relay serve ARGS` run to its end: for the ways it refuses to start."""
    return subprocess.run(
        [sys.executable, "-m", "bot", "serve", *args],
        env=environ(tmp_path, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def serve_in_background(
    tmp_path: Path, fake: FakeSlack, *args: str, **extra: str
) -> subprocess.Popen[str]:
    """`relay serve ARGS` talking to ``fake``, its stderr piped for the ready line."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve", *args],
        env=environ(
            tmp_path,
            SLACK_BOT_TOKEN=fake.bot_token,
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake.api_url,
            **extra,
        ),
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


@pytest.mark.parametrize(
    ("extra", "args", "expected"),
    [
        ({}, [], "SLACK_BOT_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, [], "SLACK_SIGNING_SECRET is not set"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, ["--socket"], "SLACK_APP_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": "xoxb-1", "RELAY_LOG_LEVEL": "LOUD"}, [], "RELAY_LOG_LEVEL"),
    ],
)
def test_missing_configuration_is_one_line_and_exit_2(
    tmp_path: Path, extra: dict[str, str], args: list[str], expected: str
) -> None:
    done = serve_until_it_exits(tmp_path, *args, **extra)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_serve_answers_slack_and_health_checks_and_stops_on_sigterm(tmp_path: Path) -> None:
    with FakeSlack() as fake:
        process = serve_in_background(tmp_path, fake, "--host", "127.0.0.1", "--port", "0")
        try:
            assert process.stderr is not None
            url = ""
            deadline = time.monotonic() + 30
            while not url and time.monotonic() < deadline:
                line = process.stderr.readline()
                found = re.search(r"serving Slack on (\S+);", line)
                url = found.group(1) if found else ""
            assert url, "relay serve never said where it listens"
            base = url.removesuffix("/slack/events")
            assert httpx.get(f"{base}/healthz").text == "ok\n"
            request = url_verification("ping-pong")
            headers = request.signed_headers(SECRET)
            answer = httpx.post(url, content=request.body, headers=headers)
            assert answer.json() == {"challenge": "ping-pong"}
            unsigned = httpx.post(
                url, content=request.body, headers={"Content-Type": "application/json"}
            )
            assert unsigned.status_code == 401
        finally:
            process.send_signal(signal.SIGTERM)
            _, rest = process.communicate(timeout=20)
        assert process.returncode == 0, rest


async def test_a_worker_in_a_slack_deployment_posts_to_slack(tmp_path: Path) -> None:
    """`relay worker` with a bot token delivers messages to Slack, not to its terminal."""
    async with DemoServices() as services:
        write_flows(tmp_path / "flows", services)
        with FakeSlack(channels=CHANNELS) as fake:
            settings = load_settings(
                DATABASE_URL=f"sqlite:///{tmp_path / 'relay.db'}",
                RELAY_FLOWS_DIR=str(tmp_path / "flows"),
            )
            async with build_services(settings, chat=TerminalChat(), passive=True) as built:
                actor = Actor(user=OPS, channel="C0GENERAL", via="slack")
                run = await built.operations.start("ping", {"note": "from a worker"}, actor)
            env = environ(
                tmp_path,
                SLACK_BOT_TOKEN=fake.bot_token,
                SLACK_API_URL=fake.api_url,
                RELAY_FLOWS_DIR=str(tmp_path / "flows"),
            )
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "bot", "worker", "--drain"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                stdin=subprocess.DEVNULL,
            )
            assert done.returncode == 0, done.stderr
            posted = json.dumps(fake.messages("C0GENERAL"))
            assert run.id in posted and "relay_approve" in posted
            assert "Ship from a worker?" not in done.stdout
