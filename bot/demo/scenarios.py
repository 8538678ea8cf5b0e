"""``relay demo``: the order process end to end, on loopback stand-ins and a fresh SQLite file.

Demo code, not product code: it starts ``DemoServices`` (inventory, billing,
shipping, accounting), points the ``order-processing`` flow's services at them,
and plays three orders through the real engine, printing what happens:

1. a large order that needs finance's approval, answered here;
2. shipping answering 503 twice: retries with back-off, then success;
3. shipping failing for good: the reservation is released (compensation),
   ``on_failure`` runs and the operators get an alert.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TextIO

from bot.definitions.models import ApprovalStep, FlowDef
from bot.demo.services import DemoServices
from bot.directory import StaticDirectory
from bot.engine.approvals import relevant_groups
from bot.engine.operations import Actor
from bot.engine.permissions import audience_groups
from bot.engine.states import RunState
from bot.settings import environment, load_settings
from bot.terminal import Answer, TerminalChat
from bot.wiring import Services, build_services
from bot.worker import follow

FLOW = "order-processing"
DEMO_USER = "U0DEMO"
DEMO_APPROVER = "U0FINANCE"
BILLING_TOKEN = "demo-billing-token-7f3a"


def _say(out: TextIO, text: str = "") -> None:
    print(text, file=out, flush=True)


async def _order(services: Services, out: TextIO, title: str, inputs: dict[str, str]) -> str:
    _say(out)
    _say(out, f"== {title}")
    _say(out, "   inputs: " + " ".join(f"{k}={v}" for k, v in inputs.items()))
    run = await services.operations.start(FLOW, inputs, Actor(user=DEMO_USER, via="demo"))
    state = (await follow(services.engine, services.outbox, run.id)).state
    _say(out, f"   => run {run.id} ended {state.value}")
    return run.id


def _directory(flow: FlowDef) -> StaticDirectory:
    """The demo's people: one requester in every group allowed to run, one approver."""
    approving: set[str] = set()
    for _, step in flow.walk():
        if isinstance(step, ApprovalStep):
            for level in step.levels():
                approving |= relevant_groups(level)
    members = {group: [DEMO_USER] for group in audience_groups(flow)}
    for group in approving:
        members.setdefault(group, []).append(DEMO_APPROVER)
    return StaticDirectory(members)


async def run_demo(*, out: TextIO, flows_dir: Path, keep: Path | None = None) -> int:
    """Play the three orders; returns a process exit code (0 when every check held)."""
    workdir = keep or Path(tempfile.mkdtemp(prefix="relay-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    database = workdir / "demo.db"
    database.unlink(missing_ok=True)
    settings = load_settings(DATABASE_URL=f"sqlite:///{database}", RELAY_FLOWS_DIR=str(flows_dir))
    async with DemoServices(billing_token=BILLING_TOKEN) as demo:
        from bot.definitions.loader import load_flows

        catalog = load_flows(flows_dir)
        if FLOW not in catalog.flows:
            problems = "; ".join(p.format() for p in catalog.problems) or "file missing"
            _say(out, f"relay demo: cannot load {FLOW} from {flows_dir}: {problems}")
            return 2
        flow = catalog.flows[FLOW].definition
        environ = dict(environment())
        for name, service in flow.services.items():
            if service.env:
                environ[service.env] = demo.url(name)
        for secret in flow.secrets:
            environ[secret] = BILLING_TOKEN
        chat = TerminalChat(out=out, approve_all=True)
        directory = _directory(flow)
        _say(out, f"Relay demo: {flow.label}, database {database}")
        _say(out, f"stand-in services on {demo.base_url}")
        async with build_services(
            settings, chat=chat, directory=directory, catalog=catalog, environ=environ
        ) as services:
            chat.answer = _approver(services)
            ok = True
            first = await _order(
                services,
                out,
                "1. A large order: finance approves it",
                {
                    "order_id": "1001",
                    "customer": "buyer@acme.example",
                    "sku": "SKU-1",
                    "amount": "2500",
                },
            )
            ok &= (await services.store.get_run(first)).state is RunState.SUCCEEDED
            demo.fail("shipping", status=503, times=2)
            second = await _order(
                services,
                out,
                "2. Shipping answers 503 twice: Relay retries with back-off",
                {
                    "order_id": "1002",
                    "customer": "ap@globex.example",
                    "sku": "SKU-1",
                    "amount": "80",
                },
            )
            ok &= (await services.store.get_run(second)).state is RunState.SUCCEEDED
            demo.fail("shipping", status=500, times=None)
            third = await _order(
                services,
                out,
                "3. Shipping fails for good: the reservation is released",
                {
                    "order_id": "1003",
                    "customer": "it@initech.example",
                    "sku": "SKU-1",
                    "amount": "120",
                },
            )
            ok &= (await services.store.get_run(third)).state is RunState.FAILED
            _say(out)
            _say(out, "== What the stand-in services saw")
            duplicates = demo.duplicates
            _say(out, f"   {len(demo.requests(''))} requests, {duplicates} duplicate deliveries")
            released = [r for r in demo.requests("/inventory/reservations") if r.method == "DELETE"]
            _say(out, f"   reservations released by compensation: {len(released)}")
            ok &= len(released) >= 1
            _say(out)
            _say(out, f"Inspect a run: relay show {third}   (DATABASE_URL=sqlite:///{database})")
    return 0 if ok else 1


def _approver(services: Services) -> Answer:
    from bot.engine.states import Decision

    async def answer(run_id: str, key: str, approve: bool, reason: str | None) -> str:
        decision = Decision.APPROVED if approve else Decision.REJECTED
        reply = await services.operations.decide(
            run_id,
            key,
            Actor(user=DEMO_APPROVER, via="demo"),
            decision,
            reason=reason or "looks right",
        )
        return f"{DEMO_APPROVER} (finance) answered: {reply}"

    return answer
