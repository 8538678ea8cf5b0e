"""The ``/relay`` grammar: what parses, and the usage shown for what does not."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.errors import CommandInvalid
from bot.slack import commands
from bot.slack.commands import (
    USAGE,
    Approvals,
    CancelRun,
    Command,
    Help,
    ListFlows,
    RetryRun,
    RunFlow,
    Status,
)

QUOTE_USAGE = '/relay run FLOW name="a value with spaces"'
KINDS: dict[str, type[Command]] = {
    "help": Help,
    "list": ListFlows,
    "run": RunFlow,
    "status": Status,
    "cancel": CancelRun,
    "retry": RetryRun,
    "approvals": Approvals,
}


def refused(text: str) -> CommandInvalid:
    with pytest.raises(CommandInvalid) as error:
        commands.parse(text)
    return error.value


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("", Help()),
        ("   \t ", Help()),
        ("help", Help()),
        ("list", ListFlows()),
        ("approvals", Approvals()),
        ("run deploy", RunFlow(flow="deploy")),
        ("run deploy env=prod count=3", RunFlow(flow="deploy", args=("env=prod", "count=3"))),
        ("status", Status()),
        ("status r1", Status(run="r1")),
        ("cancel r1", CancelRun(run="r1")),
        ("retry r1", RetryRun(run="r1")),
        ("  cancel   r1  ", CancelRun(run="r1")),
    ],
)
def test_each_verb(text: str, command: Command) -> None:
    assert commands.parse(text) == command


def test_every_usage_shown_parses_as_its_verb() -> None:
    assert set(USAGE) == set(KINDS)
    for verb, usage in USAGE.items():
        words = usage.replace("[", "").replace("]", "").split()[1:]
        parsed = commands.parse(" ".join(word for word in words if word != "…"))
        assert isinstance(parsed, KINDS[verb])


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("HELP", Help()),
        ("List", ListFlows()),
        ("APPROVALS", Approvals()),
        ("Run Deploy Env=Prod", RunFlow(flow="Deploy", args=("Env=Prod",))),
        ("STATUS AbC", Status(run="AbC")),
        ("Cancel AbC", CancelRun(run="AbC")),
        ("rEtRy AbC", RetryRun(run="AbC")),
    ],
)
def test_verbs_ignore_case_and_arguments_keep_it(text: str, command: Command) -> None:
    assert commands.parse(text) == command


@pytest.mark.parametrize(
    "text",
    [
        'run deploy note="two words" env=prod',
        "run deploy note='two words' env=prod",
        "run deploy note=\u201ctwo words\u201d env=prod",
        "run deploy note=\u2018two words\u2019 env=prod",
        "run deploy \u201cnote=two words\u201d env=prod",
    ],
)
def test_straight_and_curly_quotes_group_words(text: str) -> None:
    assert commands.parse(text) == RunFlow(flow="deploy", args=("note=two words", "env=prod"))


def test_an_apostrophe_inside_curly_double_quotes_survives() -> None:
    parsed = commands.parse("run deploy note=\u201cdon\u2019t stop\u201d")
    assert parsed == RunFlow(flow="deploy", args=("note=don't stop",))


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("run deploy note=don\u2019t", "note=don't"),
        ("run deploy note=\u2018it\u2019 other=rock\u2019n\u2019roll", "note=it"),
        ("run deploy note=\u201cthe \u2018best\u2019 one\u201d", "note=the 'best' one"),
        ("run deploy note=\\\u201cquoted", "note=\u201cquoted"),
    ],
)
def test_a_curly_apostrophe_outside_quotes_is_text(text: str, value: str) -> None:
    parsed = commands.parse(text)
    assert isinstance(parsed, RunFlow)
    assert parsed.args[0] == value


def test_quoted_empty_value_is_kept() -> None:
    assert commands.parse('run deploy note=""') == RunFlow(flow="deploy", args=("note=",))


@pytest.mark.parametrize(
    "text",
    [
        'run deploy note="two words',
        "run deploy note='two words",
        "run deploy note=\u201ctwo words",
        'status "r1',
    ],
)
def test_an_unclosed_quote_shows_how_to_quote(text: str) -> None:
    error = refused(text)
    assert error.message == "a quote is not closed"
    assert error.usage == QUOTE_USAGE
    assert error.user_message == f"a quote is not closed. Usage: {QUOTE_USAGE}"


@pytest.mark.parametrize(
    ("text", "verb", "why"),
    [
        ("help me", "help", "`help` takes no arguments"),
        ("list all", "list", "`list` takes no arguments"),
        ("approvals mine please", "approvals", "`approvals` takes no arguments"),
        ("LIST all", "list", "`list` takes no arguments"),
        ("run", "run", "say which flow to run"),
        ("status r1 r2", "status", "give at most one run id"),
        ("cancel", "cancel", "give exactly one run id"),
        ("cancel r1 r2", "cancel", "give exactly one run id"),
        ("retry", "retry", "give exactly one run id"),
        ('retry r1 "r2 r3"', "retry", "give exactly one run id"),
    ],
)
def test_wrong_arguments_show_that_verbs_usage(text: str, verb: str, why: str) -> None:
    error = refused(text)
    assert error.message == why
    assert error.usage == USAGE[verb]
    assert error.user_message.endswith(f"Usage: {USAGE[verb]}")


def test_an_unknown_verb_lists_the_known_ones() -> None:
    error = refused("deploy now")
    assert error.message.startswith("`deploy` is not a Relay command")
    assert all(verb in error.message for verb in USAGE)
    assert error.usage == USAGE["help"]


def test_a_quoted_empty_verb_is_unknown() -> None:
    assert refused('""').usage == USAGE["help"]


WORDS = st.sampled_from(
    [
        *USAGE,
        "RUN",
        "Status",
        "deploy",
        "r1",
        "x=1",
        "note=",
        '"',
        "'",
        "\u201c",
        "\u201d",
        "\u2018",
        "\u2019",
        "\\",
        "#",
        "=",
        " ",
        "\t",
        "\n",
        "\x00",
        "\u00e9t\u00e9",
    ]
)


def check(text: str) -> None:
    """Parsing ``text`` gives a command or a CommandInvalid with a usage, nothing else."""
    try:
        parsed = commands.parse(text)
    except CommandInvalid as error:
        assert error.usage in {*USAGE.values(), QUOTE_USAGE}
        assert error.message
        return
    assert isinstance(parsed, tuple(KINDS.values()))


@given(st.text())
def test_any_text_parses_or_is_refused(text: str) -> None:
    check(text)


@given(st.lists(WORDS, max_size=12).map("".join))
def test_any_mix_of_verbs_quotes_and_escapes_parses_or_is_refused(text: str) -> None:
    check(text)


@given(st.lists(WORDS, max_size=8).map(" ".join))
def test_any_sentence_of_verbs_and_quotes_parses_or_is_refused(text: str) -> None:
    check(text)
