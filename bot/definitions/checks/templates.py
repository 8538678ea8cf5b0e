"""Check every template against what will exist when it renders.

A template may read ``inputs``, ``run``, the ``secrets`` the flow lists, the
loop variable of its own ``for_each``, and the results of steps that have
*finished* by then: earlier steps on its line, whole ``parallel`` steps before
it, but never itself, a later step or a step in a sibling branch. A compensate
step may also read the step it undoes; ``on_failure`` steps may read any step
of the main line or compensation; the flow's ``outputs`` any main-line step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bot.definitions.checks.context import CheckContext, is_template, strings_in
from bot.definitions.models import FlowDef, ParallelStep, Path, RetryingStep, Step
from bot.definitions.problems import Problem, did_you_mean, suggestion
from bot.definitions.templating import SCOPE_ROOTS, Reference, references
from bot.errors import TemplateError

RUN_FIELDS = ("id", "flow", "started_by", "started_at", "source")
STEP_ATTRIBUTES = ("output", "state")

_ProblemMaker = Callable[[str, str, str], Problem]


@dataclass(frozen=True)
class _Place:
    """One template string and what it may read."""

    path: Path
    text: str
    expression: bool
    owner: str
    """Who holds the template, in words: "step `x`", "the flow's `outputs`"."""
    step_path: Path | None
    step_id: str | None
    visible: frozenset[str]
    loop_names: tuple[str, ...] = ()
    """Inside a ``for_each``: the loop variable and ``index``."""
    run_only: bool = False
    """Schedule inputs are rendered before a run exists beyond its ``run`` facts."""


def template_references(ctx: CheckContext) -> Iterator[Problem]:
    """Syntax errors and names that will not exist when the template renders."""
    step_paths: dict[str, Path] = {}
    for path, step in ctx.flow.walk():
        step_paths.setdefault(step.id, path)
    for place in _places(ctx.flow):
        try:
            found = list(dict.fromkeys(references(place.text, expression=place.expression)))
        except TemplateError as exc:
            line = exc.fields.get("line")
            yield ctx.problem(
                place.path,
                "template-syntax",
                f"{place.owner}: {exc.message}",
                "fix the template syntax: `{{ expression }}` for values, `{% %}` for logic",
                mark=ctx.source.template_mark(place.path, line if isinstance(line, int) else None),
            )
            continue
        for reference in found:
            problem = _judge(ctx, place, reference, step_paths)
            if problem is not None:
                yield problem


def _judge(
    ctx: CheckContext, place: _Place, ref: Reference, step_paths: dict[str, Path]
) -> Problem | None:
    def problem(code: str, message: str, fix: str) -> Problem:
        return ctx.problem(place.path, code, f"{place.owner}: {message}", fix, value=True)

    flow = ctx.flow
    if place.run_only and ref.root in ("inputs", "steps"):
        return problem(
            "unknown-name",
            f"`{ref.root}` does not exist yet when a schedule starts a run",
            "use literal values here (or `run.*`)",
        )
    if ref.root == "inputs" and ref.name is not None and ref.name not in flow.inputs:
        match = did_you_mean(ref.name, flow.inputs)
        return problem(
            "unknown-input",
            f"`inputs.{ref.name}` is not an input of this flow{suggestion(ref.name, flow.inputs)}",
            f"write `inputs.{match}`" if match else f"declare `{ref.name}` under `inputs:`",
        )
    if ref.root == "steps" and ref.name is not None:
        return _judge_step(place, ref, step_paths, problem)
    if ref.root == "run" and ref.name is not None and ref.name not in RUN_FIELDS:
        return problem(
            "unknown-name",
            f"`run.{ref.name}` does not exist{suggestion(ref.name, RUN_FIELDS)}",
            "use one of " + ", ".join(f"`run.{name}`" for name in RUN_FIELDS),
        )
    if ref.root == "secrets" and ref.name is None:
        return problem(
            "unknown-secret",
            "`secrets` can only be read one at a time",
            "read a listed secret as `{{ secrets.NAME }}`",
        )
    if ref.root == "secrets" and ref.name not in flow.secrets:
        name = ref.name or ""
        match = did_you_mean(name, flow.secrets)
        return problem(
            "unknown-secret",
            f"`secrets.{name}` is not listed in `secrets:`{suggestion(name, flow.secrets)}",
            f"write `secrets.{match}`"
            if match
            else f"add `{name}` to `secrets:` (the environment variable to read)",
        )
    if ref.root not in SCOPE_ROOTS and ref.root not in place.loop_names:
        names = [*SCOPE_ROOTS, *place.loop_names]
        return problem(
            "unknown-name",
            f"`{ref.root}` is not defined here{suggestion(ref.root, names)}",
            "read `inputs.*`, `steps.<id>.output`, `run.*` or `secrets.*`"
            + (f", or `{place.loop_names[0]}` and `index`" if place.loop_names else ""),
        )
    return None


def _judge_step(
    place: _Place,
    ref: Reference,
    step_paths: dict[str, Path],
    problem: _ProblemMaker,
) -> Problem | None:
    name = ref.name or ""
    if name not in step_paths:
        match = did_you_mean(name, step_paths)
        return problem(
            "unknown-step",
            f"there is no step `{name}`{suggestion(name, step_paths)}",
            f"write `steps.{match}`" if match else "use the `id:` of a step in this file",
        )
    if name not in place.visible:
        return problem(
            "step-not-run-yet",
            f"reads `steps.{name}`, but {_why_not(name, step_paths[name], place)}",
            "read only steps that finish before this point, or move this step after them",
        )
    if ref.attribute is not None and ref.attribute not in STEP_ATTRIBUTES:
        return problem(
            "unknown-step-attribute",
            f"`steps.{name}.{ref.attribute}` does not exist"
            f"{suggestion(ref.attribute, STEP_ATTRIBUTES)}",
            f"read `steps.{name}.output` or `steps.{name}.state`",
        )
    return None


def _why_not(name: str, target: Path, place: _Place) -> str:
    if name == place.step_id:
        return "a step cannot read its own result"
    if target[0] == "on_failure":
        return f"`{name}` only runs after a failure, in `on_failure`"
    if "compensate" in target:
        return f"`{name}` only runs when undoing, in `compensate`"
    if place.step_path is not None and _sibling_branches(target, place.step_path):
        return f"`{name}` runs at the same time, in another branch of the same `parallel`"
    return f"`{name}` has not finished at this point"


def _sibling_branches(first: Path, second: Path) -> bool:
    common = 0
    while common < min(len(first), len(second)) and first[common] == second[common]:
        common += 1
    return (
        0 < common < min(len(first), len(second))
        and first[common - 1] == "branches"
        and first[common] != second[common]
    )


def _places(flow: FlowDef) -> Iterator[_Place]:
    visible = _visibility(flow)
    for path, step in flow.walk():
        owner = f"step `{step.id}`"
        loop: tuple[str, ...] = ()
        if isinstance(step, RetryingStep) and step.for_each is not None:
            loop = (step.for_each.as_, "index")
        for sub, text in step.templates():
            if is_template(text):
                in_items = sub == ("for_each", "items")
                yield _Place(
                    (*path, *sub),
                    text,
                    False,
                    owner,
                    path,
                    step.id,
                    visible[path],
                    loop_names=() if in_items else loop,
                )
        if step.when is not None:
            yield _Place((*path, "when"), step.when, True, owner, path, step.id, visible[path])
    main_line = frozenset(
        step.id for path, step in flow.walk() if path[0] == "steps" and "compensate" not in path
    )
    for name, text in flow.outputs.items():
        if is_template(text):
            yield _Place(
                ("outputs", name), text, False, "the flow's `outputs`", None, None, main_line
            )
    for index, trigger in enumerate(flow.triggers):
        for path, text in strings_in(trigger.inputs, ("triggers", index, "inputs")):
            if is_template(text):
                owner = "the schedule's `inputs`"
                yield _Place(path, text, False, owner, None, None, frozenset(), run_only=True)


def _visibility(flow: FlowDef) -> dict[Path, frozenset[str]]:
    """For each step's path, the ids of the steps certainly finished before it starts."""
    seen: dict[Path, frozenset[str]] = {}

    def visit(step: Step, path: Path, done: set[str]) -> None:
        seen[path] = frozenset(done)
        if isinstance(step, ParallelStep):
            finished: set[str] = set()
            for name, branch in step.branches.items():
                branch_done = set(done)
                for index, child in enumerate(branch):
                    visit(child, (*path, "branches", name, index), branch_done)
                finished |= branch_done
            done |= finished
        done.add(step.id)
        undo_done = set(done)
        for index, undo in enumerate(step.compensate):
            visit(undo, (*path, "compensate", index), undo_done)

    main: set[str] = set()
    for index, step in enumerate(flow.steps):
        visit(step, ("steps", index), main)
    after_failure = {step.id for path, step in flow.walk() if path[0] == "steps"}
    for index, step in enumerate(flow.on_failure):
        visit(step, ("on_failure", index), after_failure)
    return seen
