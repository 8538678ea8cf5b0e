"""The engine from a terminal, without Slack.

``relay run``, ``runs``, ``show``, ``approve``/``reject``, ``cancel``/``retry``/``skip``,
``worker`` and ``audit verify``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bot import eventloop
from bot.cli.common import at_least_one
from bot.definitions.inputs import parse_assignments
from bot.definitions.models import ApprovalStep
from bot.directory import StaticDirectory
from bot.engine.audit import verify_chain
from bot.engine.move import flow_of
from bot.engine.operations import Actor
from bot.engine.permissions import LOCAL_OPERATOR
from bot.engine.states import Decision, RunState
from bot.errors import VoteRefused
from bot.heap import freeze_startup
from bot.logs import configure
from bot.redact import Redactor
from bot.settings import environment, load_settings
from bot.terminal import TerminalChat
from bot.wiring import Services, build_services
from bot.worker import follow, parked, run_worker, stop_on_signals

from .render import runs_table, show_run


@asynccontextmanager
async def _services(chat: TerminalChat | None = None, *, passive: bool) -> AsyncIterator[Services]:
    async with build_services(
        load_settings(), chat=chat or TerminalChat(), passive=passive
    ) as services:
        yield services


def _actor(args: argparse.Namespace) -> Actor:
    return Actor(user=getattr(args, "as_user", None) or LOCAL_OPERATOR, via="cli")


def _redactor(services: Services) -> Redactor:
    env = environment()
    names = {name for flow in services.engine.flows.values() for name in flow.secrets}
    return Redactor(env[name] for name in names if env.get(name))


# ------------------------------------------------------------------ relay run


def _interactive() -> bool:
    return sys.stdin.isatty() and not os.environ.get("CI")


async def _run(args: argparse.Namespace) -> int:
    current: dict[str, str | None] = {"run": None}
    chat = TerminalChat(
        interactive=_interactive(),
        approve_all=args.approve_all,
        answer_as=args.as_user,
        only_run=lambda: current["run"],
    )
    async with _services(chat, passive=False) as services:
        raw = parse_assignments(args.assignments)
        if args.dry_run:
            from bot.dryrun import describe_plan

            flow = services.engine.definition(args.flow).flow
            print(describe_plan(flow, raw, environ=environment()))
            return 0
        chat.answer = _answerer(services, args)
        run = await services.operations.start(args.flow, raw, _actor(args))
        current["run"] = run.id
        print(f"Run {run.id} of {run.flow} started")
        return await _follow(services, run.id)


async def _follow(services: Services, run_id: str) -> int:
    """Work on the run here until it ends or waits on people."""
    run = await follow(services.engine, services.outbox, run_id)
    if run.state.active:
        print(
            f"Run {run_id} is {run.state.value}: waiting on people or the clock. "
            "`relay worker` carries it on; `relay show "
            f"{run_id}` shows where it stands."
        )
        return 0
    return 0 if run.state is RunState.SUCCEEDED else 1


def _answerer(services: Services, args: argparse.Namespace) -> Any:
    async def answer(run_id: str, key: str, approve: bool, reason: str | None) -> str:
        decision = Decision.APPROVED if approve else Decision.REJECTED
        if args.approve_all:
            # As the people the step would ask: the one who starts a run is often
            # not allowed to approve it (a run permission, four eyes).
            voters = await _listed_approvers(services, run_id, key)
            if not voters:
                return (
                    "no approver of this step is known here: list its groups' members in "
                    f"RELAY_DIRECTORY_FILE, or answer with relay approve {run_id} {key} --as USER"
                )
        elif args.as_user:
            voters = [args.as_user]
        else:
            return "say who answers with --as USER"
        replies: list[str] = []
        for voter in voters:
            try:
                replies.append(
                    await services.operations.decide(
                        run_id,
                        key,
                        Actor(user=voter, via="cli"),
                        decision,
                        reason=reason or ("approved from the terminal" if approve else None),
                    )
                )
            except VoteRefused as exc:
                replies.append(f"{voter}: {exc.user_message}")
            snapshot = await services.store.snapshot(run_id)
            if snapshot.approvals[key].state != "pending":
                break
        return "; ".join(replies)

    return answer


async def _listed_approvers(services: Services, run_id: str, key: str) -> list[str]:
    """For ``--approve-all``: the users the step names, then members of its groups."""
    snapshot = await services.store.snapshot(run_id)
    step = flow_of(snapshot.run).step(snapshot.steps[key].step_id)
    assert isinstance(step, ApprovalStep)
    level = step.levels()[snapshot.approvals[key].level]
    if level.approvers:
        voters = list(level.approvers.users)
        groups = list(level.approvers.groups)
    else:
        voters = [user for quorum in level.quorum for user in quorum.users]
        groups = [quorum.group for quorum in level.quorum if quorum.group]
    if isinstance(services.directory, StaticDirectory):
        for group in groups:
            voters.extend(sorted(services.directory.members(group)))
    return list(dict.fromkeys(voters))


# ------------------------------------------------------------------ reading


async def _runs(args: argparse.Namespace) -> int:
    async with _services(passive=True) as services:
        states = [RunState(s) for s in args.state] if args.state else None
        runs = await services.store.list_runs(flow=args.flow, states=states, limit=args.limit)
        filtered = bool(args.flow or states)
        print(runs_table(runs, services.engine.clock.now(), filtered=filtered))
    return 0


async def _show(args: argparse.Namespace) -> int:
    async with _services(passive=True) as services:
        run = await services.store.find_run(args.run)
        snapshot = await services.store.snapshot(run.id)
        attempts = await services.store.attempts(run.id)
        audit = await services.store.audit(run.id)
        print(show_run(snapshot, attempts, audit, _redactor(services)))
    return 0


async def _audit_verify(args: argparse.Namespace) -> int:
    async with _services(passive=True) as services:
        bad = 0
        run_ids = await services.store.audited_run_ids()
        for run_id in run_ids:
            run = await services.store.get_run(run_id)
            problem = verify_chain(await services.store.audit(run_id), head=run.audit_head)
            if problem:
                bad += 1
                print(f"run {run_id}: {problem}")
        print(f"{len(run_ids)} runs checked, {bad} with a broken audit chain")
    return 1 if bad else 0


# ------------------------------------------------------------------ acting


async def _vote(args: argparse.Namespace, decision: Decision) -> int:
    async with _services(passive=True) as services:
        reply = await services.operations.decide(
            args.run, args.step, _actor(args), decision, reason=args.reason
        )
        print(reply)
    return 0


async def _operate(args: argparse.Namespace, what: str) -> int:
    async with _services(passive=True) as services:
        ops = services.operations
        if what == "cancel":
            reply = await ops.cancel(args.run, _actor(args), reason=args.reason)
        elif what == "retry":
            reply = await ops.retry(args.run, _actor(args), step=args.step)
        else:
            reply = await ops.skip(args.run, _actor(args), step=args.step)
        print(reply)
    return 0


@asynccontextmanager
async def _worker_services() -> AsyncIterator[Services]:
    """Slack's chat when a bot token is set, so messages reach the channels; else the terminal."""
    settings = load_settings()
    if settings.slack_bot_token is None:
        async with _services(TerminalChat(), passive=False) as services:
            yield services
        return
    from bot.serve import slack_runtime

    configure(settings)
    async with slack_runtime(settings) as runtime:
        yield runtime.services


async def _worker(args: argparse.Namespace) -> int:
    async with _worker_services() as services:
        stop = stop_on_signals()

        async def drained() -> bool:
            return bool(args.drain) and await parked(services.engine)

        print(f"worker {services.engine.worker_id} started", file=sys.stderr)
        freeze_startup()
        # A drain finishes what is there; it starts nothing new on a schedule.
        schedules = None if args.drain else services.scheduler
        await run_worker(
            services.engine, services.outbox, stop=stop, until=drained, scheduler=schedules
        )
        if args.drain:
            await services.engine.drain_flights()
    return 0


# ------------------------------------------------------------------ parsers


_RUN_HELP = "the run's id, or a unique prefix of it"


def _sync(coro_fn: Any, *extra: Any) -> Any:
    def call(args: argparse.Namespace) -> int:
        return int(eventloop.run(coro_fn(args, *extra)))

    return call


def register(commands: Any) -> None:
    """Add the run commands to the ``relay`` parser."""
    p = commands.add_parser(
        "run",
        help="run a flow here, with live progress",
        description="Run a flow in this terminal: each step with its state and duration, "
        "approval questions asked here. Example: relay run order-processing order_id=42 amount=99",
    )
    p.add_argument("flow", help="the flow's name")
    # A default keeps argparse from naming the optional inputs as required.
    p.add_argument("assignments", nargs="*", default=[], metavar="key=value", help="inputs")
    p.add_argument(
        "--as",
        dest="as_user",
        metavar="USER",
        help="who starts the run, and answers its approval questions at the prompt",
    )
    p.add_argument(
        "--approve-all",
        action="store_true",
        help="approve every approval as the approvers the step names (for scripts)",
    )
    p.add_argument("--dry-run", action="store_true", help="show the plan; call nothing")
    p.set_defaults(func=_sync(_run))

    p = commands.add_parser(
        "worker",
        help="run the engine without Slack: timers, retries, resumed runs, schedules",
        description="Resume unfinished runs, fire due timers and retries, deliver messages, "
        "start the runs flow triggers schedule. This is what to start after a crash. "
        "Stops on Ctrl-C / SIGTERM.",
    )
    p.add_argument(
        "--drain",
        action="store_true",
        help="return once only people can move runs (schedules do not fire)",
    )
    p.set_defaults(func=_sync(_worker))

    p = commands.add_parser(
        "runs",
        help="list recent runs",
        description="List recent runs, newest first: id, flow, state, who started it and "
        "when. Example: relay runs --state waiting --state failed",
    )
    p.add_argument("--flow", help="only runs of this flow")
    p.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in RunState],
        help="only runs in this state (repeat for several)",
    )
    p.add_argument("--limit", type=at_least_one, default=20, help="at most this many (default: 20)")
    p.set_defaults(func=_sync(_runs))

    p = commands.add_parser(
        "show",
        help="show a run: steps, attempts, outputs, audit trail",
        description="Show one run (a unique prefix of its id is enough). Secrets are masked.",
    )
    p.add_argument("run", help=_RUN_HELP)
    p.set_defaults(func=_sync(_show))

    for name, decision in (("approve", Decision.APPROVED), ("reject", Decision.REJECTED)):
        p = commands.add_parser(
            name,
            help=f"{name} a waiting approval",
            description=f"{name.title()} an approval step. "
            f"Example: relay {name} RUN STEP --as U0ANA",
        )
        p.add_argument("run", help=_RUN_HELP)
        p.add_argument("step", help="the approval step's key, as `relay show` lists it")
        p.add_argument(
            "--as", dest="as_user", metavar="USER", required=True, help="who decides (a user id)"
        )
        p.add_argument("--reason", help="why; the flow may require one to reject")
        p.set_defaults(func=_sync(_vote, decision))

    for name, text in (
        ("cancel", "cancel a run (in-flight calls are abandoned, finished steps undone)"),
        ("retry", "reopen a failed run from its failed step"),
        ("skip", "skip a failed step and carry on"),
    ):
        p = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        p.add_argument("run", help=_RUN_HELP)
        if name == "cancel":
            p.add_argument("--reason", help="why, kept in the run's error and audit trail")
        else:
            p.add_argument("step", nargs="?", help="default: the step that failed")
        p.add_argument("--as", dest="as_user", metavar="USER", help="default: local operator")
        p.set_defaults(func=_sync(_operate, name))

    p = commands.add_parser("audit", help="check the audit trail", description="Audit tools.")
    audit = p.add_subparsers(dest="audit_command", required=True, metavar="verify")
    v = audit.add_parser(
        "verify", help="check every run's hash chain", description="Verify every run's chain."
    )
    v.set_defaults(func=_sync(_audit_verify))
