"""``relay validate`` and ``relay schema``: check flow files before they reach the bot."""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence

from bot.cli.common import EXIT_FAILED, EXIT_OK, Subparsers, UsageError, command_parser
from bot.definitions.loader import Catalog, flow_files, load_catalog
from bot.definitions.problems import Problem
from bot.definitions.schema import flow_schema
from bot.settings import load_settings


def register(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    """Add ``validate`` and ``schema``."""
    validate = command_parser(
        subparsers,
        "validate",
        summary="check flow files and list every problem",
        description=(
            "Load flow files the way the bot does and list every problem in one pass,\n"
            "each as file:line:col with a fix. Exits 1 when any file has an error\n"
            "(and with --strict, a warning), 0 when all is clean."
        ),
        examples=(
            "  relay validate              # every file in RELAY_FLOWS_DIR (default flows/)\n"
            "  relay validate flows/deploy-service.yaml\n"
            "  relay validate flows/ --format json --strict"
        ),
    )
    validate.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="flow files or directories of them (default: RELAY_FLOWS_DIR)",
    )
    validate.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text for people (default), json for tools",
    )
    validate.add_argument("--strict", action="store_true", help="fail on warnings too")
    validate.set_defaults(func=run_validate)

    schema = command_parser(
        subparsers,
        "schema",
        summary="print the JSON Schema of the flow format",
        description=(
            "Print the JSON Schema of flow files, for editor completion and checks.\n"
            "See docs/flows.md, 'Editor support', to wire it into VS Code."
        ),
        examples="  relay schema --output flow.schema.json",
    )
    schema.add_argument("--output", "-o", metavar="FILE", help="write to FILE instead of stdout")
    schema.set_defaults(func=run_schema)


def run_validate(args: argparse.Namespace) -> int:
    """Validate the given paths as one set of flows; print problems and a summary."""
    given: Sequence[str] = args.paths or [str(load_settings().flows_dir)]
    catalog = load_catalog(_expand(given))
    errors = sum(problem.is_error for problem in catalog.problems)
    warnings = len(catalog.problems) - errors
    if args.format == "json":
        print(json.dumps(_report(catalog, errors, warnings), indent=2))
    else:
        for problem in catalog.problems:
            print(f"{problem.file}:{problem.line}:{problem.column}: ", end="")
            print(f"{problem.severity}: {problem.message}")
            print(f"    fix: {problem.fix}")
        print(
            f"{_count(len(catalog.files), 'file')}, {len(catalog.flows)} valid, "
            f"{_count(errors, 'error')}, {_count(warnings, 'warning')}"
        )
    failed = errors > 0 or (args.strict and warnings > 0)
    return EXIT_FAILED if failed else EXIT_OK


def _expand(given: Sequence[str]) -> list[pathlib.Path]:
    files: list[pathlib.Path] = []
    for item in given:
        path = pathlib.Path(item)
        if path.is_dir():
            found = flow_files(path)
            if not found:
                raise UsageError(f"{item}: no flow files (*.yaml, *.yml) in this directory")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{item}: no such file or directory")
    return files


def _report(catalog: Catalog, errors: int, warnings: int) -> dict[str, object]:
    valid = {str(loaded.path): name for name, loaded in catalog.flows.items()}
    return {
        "files": [
            {"file": file, "flow": valid.get(file), "valid": file in valid}
            for file in catalog.files
        ],
        "problems": [_problem_json(problem) for problem in catalog.problems],
        "errors": errors,
        "warnings": warnings,
    }


def _problem_json(problem: Problem) -> dict[str, object]:
    return {
        "file": problem.file,
        "line": problem.line,
        "column": problem.column,
        "severity": problem.severity,
        "code": problem.code,
        "message": problem.message,
        "fix": problem.fix,
    }


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def run_schema(args: argparse.Namespace) -> int:
    """Print or write the flow JSON Schema."""
    text = json.dumps(flow_schema(), indent=2) + "\n"
    if args.output is None:
        print(text, end="")
        return EXIT_OK
    try:
        pathlib.Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{args.output}: cannot write: {exc.strerror or exc}") from None
    print(f"wrote {args.output}")
    return EXIT_OK
