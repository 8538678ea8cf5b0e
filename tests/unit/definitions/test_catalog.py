"""Loading a directory of flows: bad files are skipped, calls between flows are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.definitions import loader
from bot.definitions.loader import load_catalog, load_flow_text, load_flows
from bot.errors import ConfigError, FlowNotFound

PERMS = "permissions: {run: {users: [U0AAA]}}\n"


def write(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(body, encoding="utf-8")
    return path


def simple(name: str, *, inputs: str = "", steps: str = "") -> str:
    steps = steps or "  - {id: a, kind: notify, text: hi}\n"
    return f"name: {name}\n{PERMS}{inputs}steps:\n{steps}"


def call(flow: str, inputs: str = "{}") -> str:
    return f"  - {{id: call, kind: flow, flow: {flow}, inputs: {inputs}}}\n"


def codes_by_file(catalog: loader.Catalog) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in catalog.problems:
        found.setdefault(Path(problem.file).name, []).append(problem.code)
    return found


def test_one_broken_file_does_not_stop_the_others(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", simple("alpha"))
    write(tmp_path, "b.yml", "name: beta\nsteps: [\n")
    write(tmp_path, "c.yaml", simple("gamma"))
    write(tmp_path, "notes.txt", "not a flow")
    write(tmp_path, ".hidden.yaml", "broken: [")
    catalog = load_flows(tmp_path)
    assert sorted(catalog.flows) == ["alpha", "gamma"]
    assert codes_by_file(catalog) == {"b.yml": ["yaml-syntax"]}
    assert [Path(file).name for file in catalog.files] == ["a.yaml", "b.yml", "c.yaml"]
    loaded = catalog.get("alpha")
    assert loaded.path == tmp_path / "a.yaml"
    assert loaded.source_text == simple("alpha")
    assert len(loaded.source_hash) == 64


def test_get_unknown_flow_suggests_a_name(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", simple("deploy-service"))
    catalog = load_flows(tmp_path)
    with pytest.raises(FlowNotFound, match="did you mean `deploy-service`"):
        catalog.get("deploy-servic")


def test_second_file_with_the_same_name_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", simple("same"))
    write(tmp_path, "b.yaml", simple("same"))
    catalog = load_flows(tmp_path)
    assert catalog.get("same").path.name == "a.yaml"
    (problem,) = catalog.problems
    assert (Path(problem.file).name, problem.code, problem.line, problem.column) == (
        "b.yaml",
        "duplicate-flow-name",
        1,
        7,
    )
    assert "already used by" in problem.message


def test_unknown_and_broken_sub_flows(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", simple("caller", steps=call("calee")))
    write(tmp_path, "b.yaml", simple("callee"))
    write(tmp_path, "c.yaml", simple("uses-broken", steps=call("broken")))
    write(tmp_path, "d.yaml", "name: broken\nsteps: 5\n")
    catalog = load_flows(tmp_path)
    assert sorted(catalog.flows) == ["callee"]
    messages = {Path(p.file).name: (p.code, p.message) for p in catalog.problems}
    assert messages["a.yaml"] == (
        "unknown-flow",
        "step `call` calls the flow `calee`, which does not exist: did you mean `callee`?",
    )
    assert messages["c.yaml"][0] == "broken-flow"


def test_cycles_between_flows_are_errors_and_callers_of_them_are_skipped(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", simple("ping", steps=call("pong")))
    write(tmp_path, "b.yaml", simple("pong", steps=call("ping")))
    write(tmp_path, "c.yaml", simple("starter", steps=call("ping")))
    write(tmp_path, "d.yaml", simple("fine"))
    catalog = load_flows(tmp_path)
    assert sorted(catalog.flows) == ["fine"]
    assert codes_by_file(catalog) == {
        "a.yaml": ["flow-cycle"],
        "b.yaml": ["flow-cycle"],
        "c.yaml": ["broken-flow"],
    }


def test_sub_flow_inputs_are_checked_against_the_called_flow(tmp_path: Path) -> None:
    inputs = "inputs: {order_id: {type: integer}, note: {type: string, default: x}}\n"
    write(tmp_path, "a.yaml", simple("child", inputs=inputs))
    write(tmp_path, "b.yaml", simple("missing", steps=call("child", "{note: hi}")))
    write(tmp_path, "c.yaml", simple("unknown", steps=call("child", "{order_id: 1, nte: hi}")))
    write(tmp_path, "d.yaml", simple("bad-value", steps=call("child", "{order_id: many}")))
    write(
        tmp_path, "e.yaml", simple("templated", steps=call("child", "{order_id: '{{ run.id }}'}"))
    )
    catalog = load_flows(tmp_path)
    assert sorted(catalog.flows) == ["child", "templated"]
    assert codes_by_file(catalog) == {
        "b.yaml": ["missing-input"],
        "c.yaml": ["unknown-input"],
        "d.yaml": ["bad-input-value"],
    }
    (unknown,) = [p for p in catalog.problems if p.code == "unknown-input"]
    assert unknown.message == "`child` has no input `nte`: did you mean `note`?"
    assert (unknown.line, unknown.column) == (4, 63)


def test_load_catalog_takes_files_in_the_given_order_once(tmp_path: Path) -> None:
    first = write(tmp_path, "z.yaml", simple("zed"))
    second = write(tmp_path, "a.yaml", simple("zed"))
    catalog = load_catalog([first, second, first])
    assert catalog.get("zed").path == first
    assert [Path(file).name for file in catalog.files] == ["z.yaml", "a.yaml"]


def test_warnings_do_not_skip_a_flow(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: open\nsteps:\n  - {id: a, kind: notify, text: hi}\n")
    catalog = load_flows(tmp_path)
    assert list(catalog.flows) == ["open"]
    assert [p.code for p in catalog.problems] == ["no-run-permission"]
    assert catalog.errors == []


def test_a_bug_in_a_check_becomes_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_check(*args: object, **kwargs: object) -> list[object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(loader, "run_checks", broken_check)
    result = load_flow_text(simple("t"), file="t.yaml")
    assert result.flow is None
    assert [(p.code, p.message) for p in result.problems] == [
        ("internal-error", "Relay failed while checking this file (RuntimeError: boom)")
    ]


def test_a_missing_directory_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the flows directory"):
        load_flows(tmp_path / "absent")
