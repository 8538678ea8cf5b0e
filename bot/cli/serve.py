"""``relay serve``: the production process (engine worker plus the Slack app)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bot import eventloop
from bot.cli.common import Subparsers, at_least_one, command_parser
from bot.logs import configure
from bot.settings import load_settings


def _serve(args: argparse.Namespace) -> int:
    # Imported here: Bolt and aiohttp take a second to import, which other commands skip.
    from bot.serve import serve

    overrides = {"PORT": args.port} if args.port is not None else {}
    if args.processes is not None:
        overrides["WEB_CONCURRENCY"] = args.processes
    settings = load_settings(**overrides)
    configure(settings)

    def ready(url: str) -> None:
        print(f"relay: serving Slack on {url}; Ctrl-C to stop", file=sys.stderr, flush=True)

    if settings.processes == 1:
        eventloop.run(serve(settings, socket=args.socket, host=args.host, ready=ready))
        return 0
    from bot.prefork import serve_processes

    def all_ready(url: str, pids: Sequence[int]) -> None:
        listed = ", ".join(map(str, pids))
        print(
            f"relay: serving Slack on {url}; {len(pids)} processes (pids {listed}); Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    return serve_processes(settings, socket=args.socket, host=args.host, ready=all_ready)


def register(commands: Subparsers[argparse.ArgumentParser]) -> None:
    """Add ``relay serve`` to the parser."""
    p = command_parser(
        commands,
        "serve",
        summary="serve Slack: slash commands, buttons, App Home, plus the engine worker",
        description="Run Relay for Slack: answer /relay commands, approval and alert buttons "
        "and App Home on PORT at /slack/events (or over Socket Mode with --socket), and run "
        "the engine worker that `relay worker` runs. Needs SLACK_BOT_TOKEN and "
        "SLACK_SIGNING_SECRET (--socket: SLACK_APP_TOKEN). Stops on Ctrl-C / SIGTERM. "
        "With --processes N (or WEB_CONCURRENCY), N such processes share the port and "
        "the database, each on a core of its own; if one dies, all stop and the exit "
        "code is 1, for the platform to restart them.",
        examples="  relay serve                 # HTTP on $PORT (default 3000)\n"
        "  relay serve --port 8080\n"
        "  relay serve --processes 2   # answer Slack on two cores (Linux)\n"
        "  relay serve --socket        # no public URL needed\n",
    )
    p.add_argument("--socket", action="store_true", help="use Socket Mode (SLACK_APP_TOKEN)")
    p.add_argument("--port", type=int, help="listen on this port (default: $PORT or 3000)")
    p.add_argument("--host", default="0.0.0.0", help="listen on this address (default 0.0.0.0)")
    p.add_argument(
        "--processes",
        type=at_least_one,
        metavar="N",
        help="serving processes sharing the port (default: $WEB_CONCURRENCY or 1)",
    )
    p.set_defaults(func=_serve)
