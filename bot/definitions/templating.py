"""Jinja2 templates of flow files, rendered in a sandbox with limits.

Flow authors are trusted to write flows, but run inputs come from anyone who may
start a run, and step outputs come from other systems. So templates render in
Jinja's ``SandboxedEnvironment`` with ``StrictUndefined`` (a typo is an error,
not an empty string), and each render is bounded in time, output size and loop
work: a hostile value cannot stall a worker.

The scope a template sees is ``inputs``, ``steps.<id>.output`` / ``.state``,
``run`` (id, flow, started_by, started_at, source), ``secrets`` and, inside a
``for_each``, the loop variable (``item`` by default).
"""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from bot.errors import TemplateError

MAX_OUTPUT_CHARS = 256 * 1024
MAX_SECONDS = 0.5
MAX_LOOP_ITEMS = 100_000
SCOPE_ROOTS = frozenset({"inputs", "steps", "run", "secrets"})

_TOO_DEEP = "template is nested too deeply (brackets, `not`s or blocks inside each other)"
_SINGLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>(?:(?!\}\}|\{\{).)*)\}\}\s*$", re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class Scope:
    """What a template may read. Built by the engine from a run snapshot."""

    inputs: Mapping[str, Any] = field(default_factory=dict)
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    run: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Loop variables such as ``item`` inside a ``for_each``."""

    def as_context(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs,
            "steps": self.steps,
            "run": self.run,
            "secrets": self.secrets,
            **self.extra,
        }


_deadline: ContextVar[float] = ContextVar("relay_template_deadline", default=float("inf"))
_budget: ContextVar[list[int]] = ContextVar("relay_template_budget")


def _check_deadline() -> None:
    if time.monotonic() > _deadline.get():
        raise TemplateError(f"template took longer than {MAX_SECONDS}s to render")


def _spend(items: int) -> None:
    budget = _budget.get(None)
    if budget is None:
        return
    budget[0] -= items
    if budget[0] < 0:
        raise TemplateError(f"template loops over more than {MAX_LOOP_ITEMS} items")


def _bounded_range(*args: int) -> range:
    values = range(*args)
    _spend(len(values))
    _check_deadline()
    return values


class _LimitedSandbox(SandboxedEnvironment):
    """The sandbox, plus a clock and a work budget checked on every call and lookup."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_deadline()
        return super().call(__context, __obj, *args, **kwargs)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_deadline()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_deadline()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _check_deadline()
        if operator_ == "**" and isinstance(right, int) and abs(right) > 1000:
            raise TemplateError("exponent too large in template")
        result = {"*": operator.mul, "**": operator.pow, "+": operator.add}[operator_](left, right)
        if isinstance(result, str | list | tuple | bytes) and len(result) > MAX_OUTPUT_CHARS:
            raise TemplateError(f"template builds a value longer than {MAX_OUTPUT_CHARS}")
        return result


def _make_env(finalize: Callable[[Any], Any] | None = None) -> _LimitedSandbox:
    env = _LimitedSandbox(undefined=StrictUndefined, autoescape=False, finalize=finalize)
    env.globals["range"] = _bounded_range
    env.policies["json.dumps_kwargs"] = {"sort_keys": True, "ensure_ascii": False}
    return env


def _url_quote(value: Any) -> str:
    return quote(str(value), safe="")


_ENV = _make_env()


@lru_cache(maxsize=8)
def _env_quoting(literal: Callable[[str], str]) -> _LimitedSandbox:
    return _make_env(finalize=lambda value: literal(str(value)))


@lru_cache(maxsize=4096)
def _compile(source: str, literal: Callable[[str], str] | None) -> Any:
    env = _ENV if literal is None else _env_quoting(literal)
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error: {exc.message}", line=exc.lineno) from None
    except RecursionError:
        raise TemplateError(_TOO_DEEP) from None


@lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    try:
        return _ENV.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"expression syntax error: {exc.message}", line=exc.lineno) from None
    except RecursionError:
        raise TemplateError(_TOO_DEEP) from None


class _Limits:
    """Install the deadline and loop budget for one render."""

    def __enter__(self) -> None:
        self._tokens = (
            _deadline.set(time.monotonic() + MAX_SECONDS),
            _budget.set([MAX_LOOP_ITEMS]),
        )

    def __exit__(self, *exc: object) -> None:
        _deadline.reset(self._tokens[0])
        _budget.reset(self._tokens[1])


def _explain(exc: Exception) -> TemplateError:
    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, UndefinedError):
        return TemplateError(f"undefined value in template: {exc.message}")
    if isinstance(exc, SecurityError):
        return TemplateError(f"template did something unsafe: {exc}")
    return TemplateError(f"template failed: {type(exc).__name__}: {exc}")


def render(
    source: str,
    scope: Scope,
    *,
    url: bool = False,
    literal: Callable[[str], str] | None = None,
) -> str:
    """Render a template to text.

    ``url=True`` percent-encodes every ``{{ }}`` value; ``literal`` quotes each
    value for a markup (a chat's), so a value typed by a person shows as typed
    and never as markup, while the template's own text keeps its formatting.
    """
    if "{" not in source:
        return source
    template = _compile(source, _url_quote if url else literal)
    chunks: list[str] = []
    size = 0
    with _Limits():
        try:
            for chunk in template.generate(scope.as_context()):
                size += len(chunk)
                if size > MAX_OUTPUT_CHARS:
                    raise TemplateError(f"template output is longer than {MAX_OUTPUT_CHARS}")
                _check_deadline()
                chunks.append(chunk)
        except Exception as exc:
            raise _explain(exc) from None
    return "".join(chunks)


def evaluate(expression: str, scope: Scope) -> Any:
    """Evaluate a bare Jinja expression (``when:``); ``{{ }}`` around it is allowed."""
    match = _SINGLE_EXPRESSION.match(expression)
    source = match.group("expr") if match else expression
    compiled = _compile_expression(source)
    with _Limits():
        try:
            value = compiled(**scope.as_context())
            if isinstance(value, Undefined):
                # StrictUndefined raises only when used: a bare ``steps.a.output.nope``
                # would otherwise come back as a value and be stored or sent.
                value._fail_with_undefined_error()
            return value
        except Exception as exc:
            raise _explain(exc) from None


def render_value(source: str, scope: Scope) -> Any:
    """Render keeping native types when the string is one ``{{ expression }}``.

    ``"{{ inputs.amount }}"`` in a JSON body stays a number, as an author expects;
    anything with text around the braces renders to a string.
    """
    match = _SINGLE_EXPRESSION.match(source)
    if match:
        return evaluate(match.group("expr"), scope)
    return render(source, scope)


def render_data(value: Any, scope: Scope) -> Any:
    """Render every string inside nested lists and mappings, keeping native types."""
    if isinstance(value, str):
        return render_value(value, scope)
    if isinstance(value, dict):
        return {key: render_data(item, scope) for key, item in value.items()}
    if isinstance(value, list):
        return [render_data(item, scope) for item in value]
    return value


@dataclass(frozen=True)
class Reference:
    """A name a template reads from the scope: ``steps.check`` or ``inputs.order_id``."""

    root: str
    name: str | None
    attribute: str | None = None
    """For ``steps.<id>.<attribute>``: ``output`` or ``state``."""


def parse(source: str, *, expression: bool = False) -> nodes.Template:
    """Parse without rendering; raises TemplateError with the line on bad syntax."""
    text = source
    if expression:
        match = _SINGLE_EXPRESSION.match(source)
        text = "{{ " + (match.group("expr") if match else source) + " }}"
    try:
        return _ENV.parse(text)
    except TemplateSyntaxError as exc:
        kind = "expression" if expression else "template"
        raise TemplateError(f"{kind} syntax error: {exc.message}", line=exc.lineno) from None
    except RecursionError:
        raise TemplateError(_TOO_DEEP) from None


def references(source: str, *, expression: bool = False) -> Iterator[Reference]:
    """Every scope name the template reads, for the checker's unknown-name errors.

    Names bound inside the template (``{% set %}``, loop targets) are not scope
    reads; free names outside the known roots are yielded with ``name=None`` so
    the checker can report them.
    """
    tree = parse(source, expression=expression)
    bound = {
        target.name for target in tree.find_all(nodes.Name) if target.ctx in ("store", "param")
    }
    ignored = bound | set(_ENV.globals) | {"loop"}
    inside_chain: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        chain = _chain(node)
        if chain is None or id(chain[0]) in inside_chain:
            continue
        root_node, parts = chain
        inside_chain.add(id(root_node))
        if root_node.name in ignored:
            continue
        if root_node.name in SCOPE_ROOTS:
            name = parts[0] if parts else None
            attribute = parts[1] if root_node.name == "steps" and len(parts) > 1 else None
            yield Reference(root_node.name, name, attribute)
        else:
            yield Reference(root_node.name, None)
    for name_node in tree.find_all(nodes.Name):
        free = name_node.ctx == "load" and id(name_node) not in inside_chain
        if free and name_node.name not in ignored:
            yield Reference(name_node.name, None)


def _chain(node: nodes.Node) -> tuple[nodes.Name, list[str]] | None:
    """Unwind ``a.b["c"].d`` into (Name a, ["b", "c", "d"]); None if not a plain chain."""
    parts: list[str] = []
    current: nodes.Node = node
    while isinstance(current, nodes.Getattr | nodes.Getitem):
        if isinstance(current, nodes.Getattr):
            parts.append(current.attr)
        elif isinstance(current.arg, nodes.Const) and isinstance(current.arg.value, str | int):
            parts.append(str(current.arg.value))
        else:
            parts = []
        current = current.node
    if not isinstance(current, nodes.Name):
        return None
    return current, list(reversed(parts))
