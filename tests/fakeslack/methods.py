"""The Web API methods the fake answers, each a function of (context, args).

Handlers return Slack's success body or raise `SlackError`; the server turns that
into HTTP 200 `{"ok": false, ...}`. Arguments arrive already merged from the query
string, form or JSON body, so a handler does not care how slack_sdk sent them.
Response shapes follow Slack's reference for each method, trimmed to the fields
a bot reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import SlackError
from .state import Json, Workspace
from .validation import decode_json_arg, message_content, view_problems
from .views import ViewStore

APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
"""Methods that take the app-level (xapp-) token; every other one takes the bot token."""


@dataclass(frozen=True)
class MethodContext:
    """What a handler may touch besides its arguments."""

    workspace: Workspace
    views: ViewStore
    socket_url: Callable[[], str]
    """Mints a Socket Mode WebSocket URL served by the fake."""


Handler = Callable[[MethodContext, Mapping[str, Any]], Json]


def _arg(args: Mapping[str, Any], name: str, *, error: str = "invalid_arguments") -> str:
    value = args.get(name)
    if value is None or value == "":
        messages = (
            [f"[ERROR] missing required field: {name}"] if error == "invalid_arguments" else []
        )
        raise SlackError(error, messages)
    return str(value)


def _ok(body: Json, warnings: tuple[str, ...] = ()) -> Json:
    """A success body, with Slack's warning fields when there are warnings."""
    body = {"ok": True, **body}
    if warnings:
        body["warning"] = ",".join(warnings)
        body["response_metadata"] = {"warnings": list(warnings)}
    return body


def _view_arg(args: Mapping[str, Any], kinds: tuple[str, ...]) -> Mapping[str, Any]:
    view = decode_json_arg(args.get("view"), error="invalid_arguments")
    if view is None:
        raise SlackError("invalid_arguments", ["[ERROR] missing required field: view"])
    problems = view_problems(view, kinds=kinds)
    if problems:
        raise SlackError("invalid_arguments", problems)
    return view


def _auth_test(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    ws = ctx.workspace
    return _ok(
        {
            "url": f"https://{ws.domain}.slack.com/",
            "team": "Relay Test",
            "user": "relay",
            "team_id": ws.team_id,
            "user_id": ws.bot_user_id,
            "bot_id": ws.bot_id,
            "is_enterprise_install": False,
        }
    )


def _chat_post_message(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    channel = _arg(args, "channel", error="channel_not_found")
    content = message_content(args)
    thread_ts = args.get("thread_ts")
    resolved = ctx.workspace.resolve_channel(channel)
    message = ctx.workspace.post_message(resolved, content, str(thread_ts) if thread_ts else None)
    return _ok({"channel": resolved, "ts": message["ts"], "message": message}, content.warnings)


def _chat_update(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    channel = _arg(args, "channel", error="channel_not_found")
    ts = _arg(args, "ts", error="message_not_found")
    content = message_content(args, require=False)
    fields = {name for name in ("text", "blocks", "attachments") if name in args}
    if not fields:
        raise SlackError("no_text")
    message = ctx.workspace.update_message(channel, ts, content, fields)
    body = {"channel": channel, "ts": ts, "text": message["text"], "message": message}
    return _ok(body, content.warnings)


def _chat_post_ephemeral(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    channel = _arg(args, "channel", error="channel_not_found")
    user = _arg(args, "user", error="user_not_found")
    content = message_content(args)
    message_ts = ctx.workspace.post_ephemeral(channel, user, content)
    return _ok({"message_ts": message_ts}, content.warnings)


def _chat_get_permalink(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    channel = _arg(args, "channel", error="channel_not_found")
    ts = _arg(args, "message_ts", error="message_not_found")
    return _ok({"channel": channel, "permalink": ctx.workspace.permalink(channel, ts)})


def _conversations_open(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    users = args.get("users")
    if isinstance(users, str):
        users = [u.strip() for u in users.split(",") if u.strip()]
    if not users:
        raise SlackError("users_list_not_supplied")
    channel, existed = ctx.workspace.open_conversation([str(u) for u in users])
    body: Json = {"channel": {"id": channel}}
    if existed:
        body.update(no_op=True, already_open=True)
    return _ok(body)


def _users_info(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    return _ok({"user": ctx.workspace.user(_arg(args, "user", error="user_not_found"))})


def _usergroups_users_list(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    usergroup = _arg(args, "usergroup", error="no_such_subteam")
    return _ok({"users": ctx.workspace.usergroup_users(usergroup)})


def _views_open(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    trigger_id = args.get("trigger_id") or args.get("interactivity_pointer")
    if not trigger_id:
        raise SlackError("invalid_arguments", ["[ERROR] missing required field: trigger_id"])
    view = _view_arg(args, ("modal",))
    return _ok({"view": ctx.views.open(str(trigger_id), view)})


def _views_update(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    view_id, external_id = args.get("view_id"), args.get("external_id")
    if not view_id and not external_id:
        raise SlackError("invalid_arguments", ["[ERROR] must provide view_id or external_id"])
    view = _view_arg(args, ("modal", "home"))
    updated = ctx.views.update(
        view,
        view_id=str(view_id) if view_id else None,
        external_id=str(external_id) if external_id else None,
        hash_=str(args["hash"]) if args.get("hash") else None,
    )
    return _ok({"view": updated})


def _views_publish(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    user_id = _arg(args, "user_id")
    view = _view_arg(args, ("home",))
    hash_ = str(args["hash"]) if args.get("hash") else None
    return _ok({"view": ctx.views.publish(user_id, view, hash_)})


def _apps_connections_open(ctx: MethodContext, args: Mapping[str, Any]) -> Json:
    return _ok({"url": ctx.socket_url()})


METHODS: Mapping[str, Handler] = {
    "auth.test": _auth_test,
    "chat.postMessage": _chat_post_message,
    "chat.update": _chat_update,
    "chat.postEphemeral": _chat_post_ephemeral,
    "chat.getPermalink": _chat_get_permalink,
    "conversations.open": _conversations_open,
    "users.info": _users_info,
    "usergroups.users.list": _usergroups_users_list,
    "views.open": _views_open,
    "views.update": _views_update,
    "views.publish": _views_publish,
    "apps.connections.open": _apps_connections_open,
}
