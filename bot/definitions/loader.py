"""Load flow files: YAML → FlowDef, with every problem pinned to file:line:col.

Loading never raises for any file content. A file with errors yields Problems
and no flow; the other files still load, so one bad edit cannot take down every
flow of a running bot. The order of work is: size limit, YAML (with alias,
depth and tag limits), model validation, cross-field checks; then, across the
loaded files, duplicate names, calls to unknown flows and call cycles.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from bot.definitions.checks import CheckContext, check_catalog, run_checks, scan_tokens
from bot.definitions.models import MAX_STEPS, FlowDef
from bot.definitions.problems import Problem, did_you_mean, has_errors
from bot.definitions.validation import validation_problems
from bot.definitions.yaml_source import MAX_BYTES, SourceMap, read_yaml
from bot.errors import ConfigError, FlowNotFound

FLOW_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True, kw_only=True)
class LoadResult:
    """The outcome of loading one file: the flow when it has no errors, and all problems."""

    file: str
    flow: FlowDef | None
    problems: list[Problem]
    source_hash: str
    """sha256 of the file's bytes: runs record it to know which version they ran."""
    text: str
    source: SourceMap
    name: str | None
    """The ``name:`` written in the file, even when the file has errors."""


@dataclass(frozen=True, kw_only=True)
class LoadedFlow:
    """A flow that loaded cleanly, with where it came from."""

    definition: FlowDef
    path: pathlib.Path
    source_hash: str
    source_text: str
    source: SourceMap


@dataclass(frozen=True, kw_only=True)
class Catalog:
    """Every flow that loaded, by name, plus the problems of all files looked at."""

    flows: dict[str, LoadedFlow]
    problems: list[Problem]
    files: list[str]

    def get(self, name: str) -> LoadedFlow:
        """The flow called ``name``; raises FlowNotFound with a did-you-mean."""
        try:
            return self.flows[name]
        except KeyError:
            match = did_you_mean(name, self.flows)
            hint = f"; did you mean `{match}`?" if match else ""
            raise FlowNotFound(f"no flow named `{name}`{hint}") from None

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.is_error]


def load_flow_text(text: str, *, file: str = "<text>") -> LoadResult:
    """Load a flow from text; ``file`` is only used to label problems."""
    raw = text.encode("utf-8", "surrogatepass")
    return _load(text, file=file, digest=_sha256(raw), size=len(raw))


def load_flow_file(path: str | os.PathLike[str]) -> LoadResult:
    """Load one flow file. Unreadable, oversized or non-UTF-8 files become Problems."""
    file = str(path)
    empty = hashlib.sha256(b"").hexdigest()
    try:
        size = os.stat(path).st_size
        if size > MAX_BYTES:
            return _failed(file, empty, _too_large(file, size))
        raw = pathlib.Path(path).read_bytes()[: MAX_BYTES + 1]
    except OSError as exc:
        problem = _file_problem(
            file,
            "unreadable-file",
            f"cannot read the file: {exc.strerror or exc}",
            "check the path",
        )
        return _failed(file, empty, problem)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        problem = Problem(
            file=file,
            line=line,
            column=column,
            severity="error",
            code="not-utf8",
            message=f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})",
            fix="save the file as UTF-8",
        )
        return _failed(file, _sha256(raw), problem)
    return _load(text, file=file, digest=_sha256(raw), size=len(raw))


def load_flows(directory: str | os.PathLike[str]) -> Catalog:
    """Load every ``*.yaml`` / ``*.yml`` file directly inside ``directory``, by name order.

    Raises ConfigError when the directory itself cannot be read: that is a
    setting (``RELAY_FLOWS_DIR``) to fix, not a problem of any one flow.
    """
    return load_catalog(flow_files(directory))


def flow_files(directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """The flow files of a directory: not hidden, YAML suffix, sorted for stable output."""
    folder = pathlib.Path(directory)
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the flows directory {folder}: {exc.strerror or exc}"
        ) from None
    return sorted(
        entry
        for entry in entries
        if entry.suffix in FLOW_SUFFIXES and not entry.name.startswith(".") and entry.is_file()
    )


def load_catalog(paths: Iterable[str | os.PathLike[str]]) -> Catalog:
    """Load the given files as one set of flows that may call each other.

    Two files with the same ``name`` are an error on the second. A flow whose
    calls fail (unknown flow, cycle, inputs that do not fit) is left out, and so
    in turn are the flows that call it.
    """
    problems: list[Problem] = []
    files: list[str] = []
    loaded: dict[str, LoadedFlow] = {}
    contexts: dict[str, CheckContext] = {}
    broken: set[str] = set()
    for path in dict.fromkeys(pathlib.Path(item) for item in paths):
        result = load_flow_file(path)
        files.append(result.file)
        problems.extend(result.problems)
        flow = result.flow
        if flow is None:
            if result.name is not None:
                broken.add(result.name)
            continue
        if flow.name in loaded:
            problems.append(_duplicate_name(result, loaded[flow.name]))
            continue
        loaded[flow.name] = LoadedFlow(
            definition=flow,
            path=path,
            source_hash=result.source_hash,
            source_text=result.text,
            source=result.source,
        )
        contexts[flow.name] = CheckContext(flow=flow, source=result.source, file=result.file)
    while True:
        found = check_catalog(contexts, broken - set(contexts))
        failing = {problem.file for problem in found if problem.is_error}
        if not failing:
            problems.extend(found)
            break
        problems.extend(problem for problem in found if problem.file in failing)
        for name in [name for name, ctx in contexts.items() if ctx.file in failing]:
            del contexts[name], loaded[name]
            broken.add(name)
    problems.sort(key=Problem.sort_key)
    return Catalog(flows=loaded, problems=problems, files=files)


def _load(text: str, *, file: str, digest: str, size: int) -> LoadResult:
    if size > MAX_BYTES:
        return _failed(file, digest, _too_large(file, size))
    try:
        return _parse(text, file=file, digest=digest)
    except Exception as exc:  # a bug in a check must not stop the other flows loading
        problem = _file_problem(
            file,
            "internal-error",
            f"Relay failed while checking this file ({type(exc).__name__}: {exc})",
            "report this as a bug in Relay, with the file",
        )
        return _failed(file, digest, problem, text=text)


def _parse(text: str, *, file: str, digest: str) -> LoadResult:
    document = read_yaml(text, file=file)
    problems = [*document.problems, *scan_tokens(text, file=file)]
    data = document.data
    name = data.get("name") if isinstance(data, dict) else None
    flow: FlowDef | None = None
    if document.complete:
        flow, found = _validate(data, source=document.source, file=file)
        problems.extend(found)
    problems.sort(key=Problem.sort_key)
    return LoadResult(
        file=file,
        flow=None if has_errors(problems) else flow,
        problems=problems,
        source_hash=digest,
        text=text,
        source=document.source,
        name=name if isinstance(name, str) else None,
    )


def _validate(data: Any, *, source: SourceMap, file: str) -> tuple[FlowDef | None, list[Problem]]:
    if not isinstance(data, dict):
        problem = _file_problem(
            file,
            "not-a-mapping",
            "a flow file must be a mapping of keys such as `name:` and `steps:`",
            "start the file with `name: my-flow` and a `steps:` list",
        )
        return None, [problem]
    count = _count_steps(data)
    if count > MAX_STEPS:
        problem = _file_problem(
            file,
            "too-many-steps",
            f"the flow has {count} steps; at most {MAX_STEPS} are allowed",
            "split it into smaller flows and call them with `kind: flow` steps",
        )
        return None, [problem]
    try:
        flow = FlowDef.model_validate(data)
    except ValidationError as exc:
        return None, validation_problems(exc, data=data, source=source, file=file)
    return flow, run_checks(flow, source=source, file=file)


def _count_steps(data: dict[str, Any]) -> int:
    """Steps in the raw data (branches and compensation included), before validation."""
    total = 0
    pending: list[Any] = [data.get("steps"), data.get("on_failure")]
    while pending:
        items = pending.pop()
        if not isinstance(items, list):
            continue
        for step in items:
            if isinstance(step, dict):
                total += 1
                pending.append(step.get("compensate"))
                branches = step.get("branches")
                if isinstance(branches, dict):
                    pending.extend(branches.values())
    return total


def _duplicate_name(result: LoadResult, first: LoadedFlow) -> Problem:
    mark = result.source.locate(("name",), value=True)
    return Problem(
        file=result.file,
        line=mark.line,
        column=mark.column,
        severity="error",
        code="duplicate-flow-name",
        message=f"the flow name `{result.name}` is already used by {first.path}",
        fix="give each flow file its own `name:`",
    )


def _too_large(file: str, size: int) -> Problem:
    return _file_problem(
        file,
        "file-too-large",
        f"the file is {size:,} bytes; flow files may be at most {MAX_BYTES:,}",
        "split it into smaller flows",
    )


def _file_problem(file: str, code: str, message: str, fix: str) -> Problem:
    return Problem(
        file=file, line=1, column=1, severity="error", code=code, message=message, fix=fix
    )


def _failed(file: str, digest: str, problem: Problem, *, text: str = "") -> LoadResult:
    return LoadResult(
        file=file,
        flow=None,
        problems=[problem],
        source_hash=digest,
        text=text,
        source=SourceMap(),
        name=None,
    )


def _sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()
