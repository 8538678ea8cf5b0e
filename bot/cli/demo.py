"""``relay demo``: the order process end to end, no Slack account needed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bot import eventloop
from bot.settings import load_settings


def _demo(args: argparse.Namespace) -> int:
    from bot.demo.scenarios import run_demo

    flows = args.flows or load_settings().flows_dir
    return eventloop.run(run_demo(out=sys.stdout, flows_dir=Path(flows), keep=args.keep))


def register(commands: Any) -> None:
    """Add ``relay demo``."""
    p = commands.add_parser(
        "demo",
        help="run the order process end to end on stand-in services (no Slack needed)",
        description="Start stand-in inventory, billing, shipping and accounting services on "
        "loopback, run flows/order-processing.yaml three times on a fresh SQLite file "
        "(approval, retries, compensation) and print what happened.",
    )
    p.add_argument("--flows", type=Path, help="where order-processing.yaml is (default: flows/)")
    p.add_argument("--keep", type=Path, metavar="DIR", help="keep the demo database in DIR")
    p.set_defaults(func=_demo)
