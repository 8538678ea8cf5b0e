"""The Slack app manifest asks for what Relay uses, and nothing more."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def manifest() -> dict[str, object]:
    data = yaml.safe_load((ROOT / "manifest.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_scopes_are_the_least_relay_needs() -> None:
    scopes = manifest()["oauth_config"]["scopes"]["bot"]  # type: ignore[index]
    assert sorted(scopes) == ["chat:write", "commands", "im:write", "usergroups:read"]


def test_every_surface_relay_serves_is_declared() -> None:
    data = manifest()
    features, settings = data["features"], data["settings"]
    assert [c["command"] for c in features["slash_commands"]] == ["/relay"]  # type: ignore[index]
    assert features["app_home"]["home_tab_enabled"] is True  # type: ignore[index]
    assert settings["interactivity"]["is_enabled"] is True  # type: ignore[index]
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]  # type: ignore[index]
    for url in (
        features["slash_commands"][0]["url"],  # type: ignore[index]
        settings["interactivity"]["request_url"],  # type: ignore[index]
        settings["event_subscriptions"]["request_url"],  # type: ignore[index]
    ):
        assert url.endswith("/slack/events")


def test_the_bot_calls_only_methods_its_scopes_allow() -> None:
    """Every Web API method the adapter calls is one the manifest's scopes cover."""
    allowed = {
        "auth_test",
        "chat_postMessage",
        "chat_update",
        "chat_postEphemeral",
        "chat_getPermalink",
        "usergroups_users_list",
        "views_open",
        "views_publish",
    }
    prefixes = ("auth", "chat", "usergroups", "views", "conversations", "users")
    called = {
        node.attr
        for path in (ROOT / "bot").rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute)
        and node.attr.split("_")[0] in prefixes
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "client"
    }
    assert called and called <= allowed, called - allowed
