"""`relay demo` is the README's first command: it must work and show what it promises."""

from __future__ import annotations

import io
from pathlib import Path

from bot.demo.scenarios import run_demo

ROOT = Path(__file__).resolve().parents[2]


async def test_demo_plays_approval_retries_and_compensation(tmp_path: Path) -> None:
    out = io.StringIO()
    code = await run_demo(out=out, flows_dir=ROOT / "flows", keep=tmp_path)
    text = out.getvalue()
    assert code == 0, text
    assert "U0FINANCE (finance) answered: approved" in text
    assert text.count("ended succeeded") == 2
    assert "ended failed" in text
    assert "↻ request_shipment" in text
    assert "↺ reserve_stock                compensated" in text
    assert "reservations released by compensation: 1" in text
    assert ", 0 duplicate deliveries" in text
    assert "demo-billing-token" not in text
