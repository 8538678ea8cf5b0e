"""``relay serve --processes N``: N serving processes on one port.

One process answers Slack's requests one after another on one core: Bolt's
parsing and dispatch of a request hold the GIL for 0.4 to 0.6 ms, so a burst
of a hundred keeps one process busy for 40 to 80 ms while the machine's other
cores idle. N processes, each a whole replica (the Slack app and the engine
worker), bind the same port with ``SO_REUSEPORT`` and Linux spreads the
connections over them. They share nothing but the database, as replicas on
separate machines do: every delivery, step and timer is claimed there.

The parent binds the port first, so port 0 resolves to one port for all and a
taken port fails with one line. It starts the first replica alone, so that a
start-up error (a refused token, an unreachable database) is reported once
rather than N times, then the others, and announces the address once all of
them listen. SIGINT and SIGTERM reach every replica, which finish as a lone
``relay serve`` does. A replica that dies on its own takes the others down and
the parent exits 1: a server at part strength that looks healthy is worse
than a restart by the platform's supervisor.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket as sockets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from bot.errors import ConfigError, RelayError
from bot.settings import Settings

log = logging.getLogger("relay.serve")

STOP_GRACE_SECONDS = 30.0
"""How long a replica may take to finish after SIGTERM before it is killed."""
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class _Replica:
    number: int
    """1 to N, in the order they start."""
    process: BaseProcess
    messages: Connection


def serve_processes(
    settings: Settings,
    *,
    socket: bool,
    host: str,
    ready: Callable[[str, Sequence[int]], None],
) -> int:
    """Run ``settings.processes`` replicas of ``relay serve`` until a signal; return the exit code.

    ``ready`` gets the listening URL and the replicas' pids once all of them
    listen. Raises ConfigError or RelayError when the first replica cannot start.
    """
    if not socket and sys.platform != "linux":
        raise ConfigError("more than one serving process needs Linux (SO_REUSEPORT spreading)")
    with contextlib.ExitStack() as stack:
        if not socket:
            port = stack.enter_context(_reserved_port(host, settings.port))
            settings = settings.model_copy(update={"port": port})
        group = _Group(settings, socket=socket, host=host)
        stack.callback(group.stop, kill_after=STOP_GRACE_SECONDS)
        stack.enter_context(_forwarding_signals(group))
        url = group.start(range(1, 2)) and group.start(range(2, settings.processes + 1))
        if url:
            ready(url, group.pids())
        # Without a URL a signal came while the replicas started: they are stopping.
        code = group.supervise() if url else 0
    return code


class _Group:
    """The replicas of one ``serve_processes`` and whether they were asked to stop."""

    def __init__(self, settings: Settings, *, socket: bool, host: str) -> None:
        self.settings = settings
        self.socket = socket
        self.host = host
        self.replicas: list[_Replica] = []
        self.stopping = False
        self._context = multiprocessing.get_context("spawn")

    def start(self, numbers: range) -> str | None:
        """Start these replicas and wait until each listens; None if stopped meanwhile."""
        started = [self._spawn(number) for number in numbers]
        url = ""
        for replica in started:
            answer = _first_message(replica)
            if answer is None:
                if self.stopping:
                    return None
                code = replica.process.exitcode
                raise RelayError(f"serving process {replica.number} exited with code {code}")
            kind, text, config = answer
            if kind == "failed":
                raise ConfigError(text) if config else RelayError(text)
            url = text
        return url

    def _spawn(self, number: int) -> _Replica:
        settings = self.settings
        if settings.worker_id is not None:
            settings = settings.model_copy(update={"worker_id": f"{settings.worker_id}-{number}"})
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_replica_main,
            args=(settings, self.socket, self.host, send),
            name=f"relay-serve-{number}",
        )
        process.start()
        send.close()
        replica = _Replica(number=number, process=process, messages=receive)
        self.replicas.append(replica)
        return replica

    def pids(self) -> list[int]:
        return [replica.process.pid or 0 for replica in self.replicas]

    def signal_all(self) -> None:
        """Ask every live replica, once, to finish (SIGTERM) as a lone ``relay serve`` is asked.

        Once only: a second SIGTERM that lands after a replica's loop has closed
        would find the default handler back and kill it mid-exit.
        """
        if self.stopping:
            return
        self.stopping = True
        for replica in self.replicas:
            if replica.process.exitcode is None and replica.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(replica.process.pid, signal.SIGTERM)

    def supervise(self) -> int:
        """Wait for a signal or a death; 0 when every replica then finished cleanly."""
        failed = False
        while not self.stopping and (alive := self._alive()):
            wait([replica.process.sentinel for replica in alive], POLL_SECONDS)
            dead = [replica for replica in self.replicas if replica.process.exitcode is not None]
            if dead and not self.stopping:
                log.error(
                    "serving process %d (pid %s) exited with code %s; stopping the others",
                    dead[0].number,
                    dead[0].process.pid,
                    dead[0].process.exitcode,
                )
                failed = True
                break
        self.stop(kill_after=STOP_GRACE_SECONDS)
        clean = all(replica.process.exitcode == 0 for replica in self.replicas)
        return 0 if clean and not failed else 1

    def stop(self, *, kill_after: float) -> None:
        """Signal the replicas, wait up to ``kill_after`` seconds, then kill what is left."""
        self.signal_all()
        deadline = time.monotonic() + kill_after
        while (alive := self._alive()) and time.monotonic() < deadline:
            wait([replica.process.sentinel for replica in alive], POLL_SECONDS)
        for replica in self._alive():
            log.error("serving process %d did not stop; killing it", replica.number)
            replica.process.kill()
            replica.process.join()

    def _alive(self) -> list[_Replica]:
        return [replica for replica in self.replicas if replica.process.exitcode is None]


def _first_message(replica: _Replica) -> tuple[str, str, bool] | None:
    """``(kind, url or message, is a ConfigError)``; None if it exited without a word."""
    wait([replica.messages, replica.process.sentinel])
    if replica.messages.poll():
        with contextlib.suppress(EOFError):
            message: tuple[str, str, bool] = replica.messages.recv()
            return message
    replica.process.join()
    return None


@contextlib.contextmanager
def _reserved_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` (resolving 0) with SO_REUSEPORT so the replicas can all bind it.

    The socket never listens, so the kernel hands it no connections.
    """
    family = sockets.AF_INET6 if ":" in host else sockets.AF_INET
    with sockets.socket(family, sockets.SOCK_STREAM) as reserved:
        reserved.setsockopt(sockets.SOL_SOCKET, sockets.SO_REUSEPORT, 1)
        try:
            reserved.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        yield reserved.getsockname()[1]


@contextlib.contextmanager
def _forwarding_signals(group: _Group) -> Iterator[None]:
    def forward(_signum: int, _frame: FrameType | None) -> None:
        group.signal_all()

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _replica_main(settings: Settings, socket: bool, host: str, messages: Connection) -> None:
    """One replica: ``relay serve`` on the reserved port, reporting back to the parent."""
    # Ctrl-C reaches the whole process group; the parent turns it into SIGTERM,
    # which the replica's loop handles once it runs. Until then, ignore it
    # rather than die with a traceback half-way through start-up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from bot import eventloop
    from bot.logs import configure
    from bot.serve import serve

    configure(settings)

    def ready(url: str) -> None:
        messages.send(("ready", url, False))

    try:
        eventloop.run(serve(settings, socket=socket, host=host, ready=ready, reuse_port=True))
    except RelayError as exc:
        messages.send(("failed", exc.user_message, isinstance(exc, ConfigError)))
        raise SystemExit(2 if isinstance(exc, ConfigError) else 1) from None
