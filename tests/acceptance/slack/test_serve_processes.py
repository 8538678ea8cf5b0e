"""`relay serve --processes 2`: two replicas on one port, started and stopped as one."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psutil
import pytest

from tests.fakeslack import FakeSlack, slash_command, url_verification

from .conftest import CHANNELS, OPS, ROOT, SECRET
from .test_serve_process import serve_in_background, serve_until_it_exits

FLOWS = ROOT / "tests" / "acceptance" / "slack" / "flows"
READY = re.compile(r"serving Slack on (.+?); 2 processes \(pids (\d+), (\d+)\)")


@dataclass
class Served:
    parent: subprocess.Popen[str]
    url: str
    pids: tuple[int, int]
    startup: str
    """What the replicas logged before the parent said they listen."""

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Signal the parent and return what it wrote to stderr after the ready line."""
        self.parent.send_signal(sig)
        _, rest = self.parent.communicate(timeout=60)
        return rest


@contextmanager
def serving(tmp_path: Path, fake: FakeSlack, *args: str) -> Iterator[Served]:
    parent = serve_in_background(
        tmp_path,
        fake,
        *("--processes", "2", "--host", "127.0.0.1", *args),
        SLACK_APP_TOKEN=fake.app_token,
        RELAY_FLOWS_DIR=str(FLOWS),
    )
    try:
        assert parent.stderr is not None
        deadline = time.monotonic() + 60
        found = None
        lines = []
        while found is None and time.monotonic() < deadline and parent.poll() is None:
            lines.append(parent.stderr.readline())
            found = READY.search(lines[-1])
        assert found, f"relay serve never said where it listens (exit {parent.poll()})"
        pids = (int(found.group(2)), int(found.group(3)))
        yield Served(parent, found.group(1), pids, "".join(lines))
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.communicate(timeout=60)


def server_pid_of(served: Served, connection: http.client.HTTPConnection) -> int:
    """Which replica accepted this connection, read from the kernel's socket table."""
    assert connection.sock is not None
    client_port = connection.sock.getsockname()[1]
    for pid in served.pids:
        for held in psutil.Process(pid).net_connections(kind="tcp"):
            if held.laddr.port == served.port and held.raddr and held.raddr.port == client_port:
                return pid
    raise AssertionError(f"no replica holds the connection from port {client_port}")


def post(
    connection: http.client.HTTPConnection, served: Served, body: bytes, headers: dict[str, str]
) -> int:
    connection.request("POST", urlsplit(served.url).path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    return response.status


def runs(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "relay.db") as db:
        return db.execute("SELECT flow, state FROM runs").fetchall()


def test_two_replicas_share_the_port_start_a_replayed_command_once_and_stop_together(
    tmp_path: Path,
) -> None:
    with FakeSlack(users=[OPS, "U0BOB", "U0CAROL"], channels=CHANNELS) as fake:
        with serving(tmp_path, fake, "--port", "0") as served:
            connections = [http.client.HTTPConnection("127.0.0.1", served.port) for _ in range(16)]
            for connection in connections:
                connection.connect()
            held = {pid: 0 for pid in served.pids}
            owner = {}
            for connection in connections:
                ping = url_verification("ping")
                assert post(connection, served, ping.body, ping.signed_headers(SECRET)) == 200
                owner[connection] = server_pid_of(served, connection)
                held[owner[connection]] += 1
            assert all(held.values()), f"the kernel gave one replica every connection: {held}"

            command = slash_command(
                text="run gate note=friday", user_id=OPS, channel_id="C0GENERAL", fake=fake
            )
            one_each = {owner[connection]: connection for connection in connections}
            assert len(one_each) == 2
            headers = command.signed_headers(SECRET)
            for connection in one_each.values():
                assert post(connection, served, command.body, headers) == 200

            for connection in connections:
                connection.close()
            # Each replica finishes the work of what it acknowledged before it exits.
            rest = served.stop()
        assert served.parent.returncode == 0, rest
        assert not any(psutil.pid_exists(pid) for pid in served.pids)
        assert "Traceback" not in rest
        # Both replicas log to the same stream, each line saying whose it is.
        assert all(f"process={pid}" in served.startup for pid in served.pids), served.startup
        assert runs(tmp_path) == [("gate", "waiting")]
        (answer,) = fake.responses(command.form()["response_url"])
        assert "gate" in str(answer)


def test_a_replica_that_dies_stops_the_other_and_the_parent_exits_1(tmp_path: Path) -> None:
    with FakeSlack() as fake, serving(tmp_path, fake, "--port", "0") as served:
        dead, other = served.pids
        psutil.Process(dead).kill()
        _, rest = served.parent.communicate(timeout=60)
        assert served.parent.returncode == 1
        assert "exited with code -9; stopping the others" in rest
        assert not psutil.pid_exists(other)


def test_each_replica_opens_its_own_socket_mode_connection(tmp_path: Path) -> None:
    with FakeSlack(users=[OPS], channels=CHANNELS) as fake:
        with serving(tmp_path, fake, "--socket") as served:
            deadline = time.monotonic() + 30
            while fake.socket_connections < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert fake.socket_connections == 2
            command = slash_command(text="run gate note=socket", user_id=OPS, fake=fake)
            envelope = fake.send_slash_command_envelope(command.form())
            fake.wait_for_ack(envelope, timeout=30)
            deadline = time.monotonic() + 30
            while not runs(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert runs(tmp_path) == [("gate", "waiting")]
            rest = served.stop(signal.SIGINT)
        assert served.parent.returncode == 0, rest


@pytest.mark.parametrize("processes", ["1", "2"])
@pytest.mark.parametrize("token", ["xoxb-wrong", None])
def test_a_start_up_error_is_reported_once(
    tmp_path: Path, token: str | None, processes: str
) -> None:
    with FakeSlack() as fake:
        extra = {"SLACK_SIGNING_SECRET": SECRET, "SLACK_API_URL": fake.api_url}
        if token is not None:
            extra["SLACK_BOT_TOKEN"] = token
        done = serve_until_it_exits(tmp_path, "--processes", processes, "--port", "0", **extra)
    assert done.returncode == 2
    assert done.stderr.count("SLACK_BOT_TOKEN") == 1, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "relay.db").exists() or runs(tmp_path) == []


def test_a_taken_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = serve_until_it_exits(
            tmp_path,
            *("--processes", "2", "--host", "127.0.0.1", "--port", str(port)),
            SLACK_BOT_TOKEN="xoxb-1",
            SLACK_SIGNING_SECRET=SECRET,
        )
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"relay: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


@pytest.mark.parametrize(
    ("args", "extra", "expected"),
    [
        (["--processes", "0"], {}, "argument --processes: expected a whole number of 1 or more"),
        ([], {"WEB_CONCURRENCY": "two"}, "bad setting WEB_CONCURRENCY"),
    ],
)
def test_a_bad_process_count_is_refused(
    tmp_path: Path, args: list[str], extra: dict[str, str], expected: str
) -> None:
    done = serve_until_it_exits(tmp_path, *args, SLACK_BOT_TOKEN="xoxb-1", **extra)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
