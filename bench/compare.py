"""The chain's overhead, this checkout against another revision, in one process.

This machine's speed drifts by 2x from one minute to the next, so two runs of
``chain.py`` taken one after the other can disagree by more than a change is
worth. Here both engines live in one process, on the same loopback service:
the other revision's ``bot`` and ``bench`` packages are exported with ``git
archive`` into a temp dir and imported under other names, and the two
engines take turns, a short round each (25 runs, 500 steps, each beside a
plain loop of the same requests), the order swapped every pair. A drift then
hits both halves of a pair alike.

It prints each side's median overhead per step, the median of the per-pair
differences, and in how many pairs this checkout was faster. Two identical
trees gave a median difference of -0.02 ms and 10 of 20 pairs; with 30 pairs
a difference below about 0.1 ms is within the noise.

Run: ``PYTHONPATH=. .venv/bin/python bench/compare.py REV [pairs]`` (default 30:
about 2.5 min).
"""

from __future__ import annotations

import importlib
import io
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from types import ModuleType

from bench import chain, common
from bot import eventloop

RUNS = 25
"""Runs per half-round: short, so that both halves of a pair see the same machine."""

_RENAMED = {"bot": "bot_then", "bench": "bench_then"}
_IMPORT = re.compile(r"\b(from|import) (bot|bench)\b")


def export(revision: str, into: Path) -> None:
    """``bot`` and ``bench`` of ``revision`` under ``into``, as ``bot_then`` and ``bench_then``."""
    exported = subprocess.run(
        ["git", "archive", "--format=tar", revision, "bot", "bench"],
        capture_output=True,
        check=False,
    )
    if exported.returncode != 0:
        reason = exported.stderr.decode(errors="replace").strip().splitlines()
        raise SystemExit(f"cannot export {revision}: {reason[-1] if reason else 'git failed'}")
    with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as files:
        # Python 3.11.4 and later refuse links and paths that leave ``into``.
        if hasattr(tarfile, "data_filter"):
            files.extraction_filter = tarfile.data_filter
        files.extractall(into)
    for old, new in _RENAMED.items():
        (into / old).rename(into / new)
    for source in into.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        renamed = _IMPORT.sub(lambda m: f"{m.group(1)} {_RENAMED[m.group(2)]}", text)
        source.write_text(renamed.replace('"bot.', '"bot_then.'), encoding="utf-8")


async def compare(then: tuple[ModuleType, ModuleType], pairs: int, url: str) -> None:
    then_chain, then_common = then
    flow = {chain.FLOW: common.http_chain_flow(chain.FLOW, chain.STEPS)}
    async with AsyncExitStack() as stack:
        now_services = await stack.enter_async_context(common.engine_services(flow, base_url=url))
        then_services = await stack.enter_async_context(
            then_common.engine_services(flow, base_url=url)
        )
        await chain.plain_loop(url, runs=5)
        await chain.engine_chain(now_services, runs=5)
        await then_chain.engine_chain(then_services, runs=5)
        sides = {"then": (then_chain, then_services), "now": (chain, now_services)}
        overhead: dict[str, list[float]] = {"then": [], "now": []}
        for number in range(pairs):
            order = ["then", "now"] if number % 2 == 0 else ["now", "then"]
            for side in order:
                module, services = sides[side]
                plain = await chain.plain_loop(url, runs=RUNS)
                engine = await module.engine_chain(services, runs=RUNS)
                overhead[side].append((engine - plain) / (RUNS * chain.STEPS) * 1000)
    differences = [t - n for t, n in zip(overhead["then"], overhead["now"], strict=True)]
    faster = sum(d > 0 for d in differences)
    common.table(
        f"chain overhead, {pairs} pairs of {RUNS} runs x {chain.STEPS} steps, alternating",
        ["measure", "ms per step"],
        [
            ["the other revision, median", f"{statistics.median(overhead['then']):.3f}"],
            ["this checkout, median", f"{statistics.median(overhead['now']):.3f}"],
            ["other - this, median of pairs", f"{statistics.median(differences):.3f}"],
        ],
    )
    print(f"this checkout was faster in {faster} of {pairs} pairs")


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit("usage: bench/compare.py REV [pairs]")
    revision = sys.argv[1]
    pairs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with tempfile.TemporaryDirectory(prefix="relay-compare-") as workdir:
        export(revision, Path(workdir))
        sys.path.insert(0, workdir)
        then = (
            importlib.import_module("bench_then.chain"),
            importlib.import_module("bench_then.common"),
        )
        with common.loopback_service() as url:
            eventloop.run(compare(then, pairs, url))


if __name__ == "__main__":
    main()
