"""Small helpers shared by the definition tests."""

from __future__ import annotations

from textwrap import dedent

from bot.definitions.loader import LoadResult, load_flow_text
from bot.definitions.problems import Problem

HEADER = """\
name: t
permissions:
  run: {users: [U0AAA]}
"""
"""A flow's first lines that draw no warning; snippets append `steps:` and more."""


def load(text: str) -> LoadResult:
    return load_flow_text(dedent(text), file="t.yaml")


def problems(text: str) -> list[Problem]:
    return load(text).problems


def only(text: str, code: str) -> Problem:
    """The one problem with ``code``; fails listing all problems otherwise."""
    found = problems(text)
    matching = [problem for problem in found if problem.code == code]
    assert len(matching) == 1, [problem.format() for problem in found]
    return matching[0]


def codes(text: str) -> list[str]:
    return [problem.code for problem in problems(text)]
