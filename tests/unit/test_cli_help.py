"""`relay COMMAND --help` is the manual: every command and every argument says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import build_parser, main


def _commands(
    parser: argparse.ArgumentParser, prefix: str = ""
) -> Iterator[tuple[str, argparse.ArgumentParser, str | None]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{prefix}{name}", sub, helps.get(name)
                yield from _commands(sub, f"{prefix}{name} ")


COMMANDS = list(_commands(build_parser()))


def test_the_readme_documents_every_command() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    names = [name for name, _, _ in COMMANDS]
    assert {"run", "worker", "runs", "show", "approve", "reject", "audit verify"} <= set(names)
    undocumented = [name for name in names if f"`relay {name}" not in readme]
    assert not undocumented, f"README.md has no line for relay {undocumented}"


@pytest.mark.parametrize(("name", "parser", "summary"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_argument_has_help(
    name: str, parser: argparse.ArgumentParser, summary: str | None
) -> None:
    assert summary, f"`relay {name}` has no line in `relay --help`"
    assert parser.description, f"`relay {name} --help` has no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
            continue
        assert action.help, f"`relay {name}`: {action.option_strings or action.dest} has no help"


def test_help_exits_0_and_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    for name, _, _ in COMMANDS:
        assert main([*name.split(), "--help"]) == 0
        assert capsys.readouterr().out.startswith(f"usage: relay {name}")
