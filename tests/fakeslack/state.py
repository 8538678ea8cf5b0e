"""What the fake workspace remembers: people, channels, messages, response URLs.

One `Workspace` is shared by the server thread (writes) and the tests (reads), so
every method takes the same re-entrant lock and hands out deep copies: a test
never sees a message half-updated, and cannot change the fake by editing a dict.
Time is wall-clock plus an offset that `advance_time` moves, so trigger (see
`views.py`) and response_url expiry is testable without sleeping.
"""

from __future__ import annotations

import copy
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import SlackError
from .validation import MessageContent

RESPONSE_URL_TTL = 30 * 60.0
RESPONSE_URL_MAX_POSTS = 5

_TS = re.compile(r"^\d{10}\.\d{6}$")

Json = dict[str, Any]


@dataclass
class _Channel:
    member: bool
    messages: dict[str, Json] = field(default_factory=dict)
    """Every message by ts, thread replies included, in posting order."""
    replies: dict[str, list[str]] = field(default_factory=dict)
    """Parent ts -> reply ts, oldest first."""


@dataclass
class _ResponseUrl:
    minted_at: float
    channel: str | None
    user: str | None
    message_ts: str | None
    posts: list[Json] = field(default_factory=list)


class Workspace:
    """One Slack workspace as seen through the bot's token."""

    def __init__(
        self,
        *,
        team_id: str,
        bot_user_id: str,
        users: Iterable[str],
        usergroups: Mapping[str, Iterable[str]],
        channels: Iterable[str],
        app_id: str = "A0TEST",
        bot_id: str = "B0BOT",
        domain: str = "relay-test",
    ) -> None:
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.app_id = app_id
        self.bot_id = bot_id
        self.domain = domain
        self._lock = threading.RLock()
        self._offset = 0.0
        self._last_ts = (0, 0)
        self._counter = 0
        self._users: dict[str, Json] = {}
        self._usergroups = {group: list(members) for group, members in usergroups.items()}
        self._channels: dict[str, _Channel] = {}
        self._dms: dict[frozenset[str], str] = {}
        self._ephemerals: dict[str, list[Json]] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self.add_user(bot_user_id, is_bot=True)
        for user in users:
            self.add_user(user)
        for channel in channels:
            self.add_channel(channel)

    # -- clock and ids -------------------------------------------------------------

    def now(self) -> float:
        """Wall-clock seconds, shifted by `advance_time`."""
        with self._lock:
            return time.time() + self._offset

    def advance_time(self, seconds: float) -> None:
        """Move the fake's clock forward, to expire triggers and response URLs."""
        if seconds < 0:
            raise ValueError("the fake's clock only moves forward, like message ts values")
        with self._lock:
            self._offset += seconds

    def next_id(self, prefix: str) -> str:
        """A new Slack-shaped id such as `D0000001` or `V0000002`."""
        with self._lock:
            self._counter += 1
            return f"{prefix}{self._counter:07d}"

    def next_ts(self) -> str:
        """A message ts: unique and increasing, shaped like `1700000000.000100`."""
        with self._lock:
            seconds = int(self.now())
            last_seconds, last_seq = self._last_ts
            seq = 100
            if seconds <= last_seconds:
                seconds, seq = last_seconds, last_seq + 100
                if seq > 999_999:
                    seconds, seq = seconds + 1, 0
            self._last_ts = (seconds, seq)
            return f"{seconds}.{seq:06d}"

    # -- directory -----------------------------------------------------------------

    def add_user(self, user_id: str, *, name: str | None = None, is_bot: bool = False) -> None:
        """Make `user_id` a member of the workspace."""
        name = name or user_id.lower()
        with self._lock:
            self._users[user_id] = {
                "id": user_id,
                "team_id": self.team_id,
                "name": name,
                "real_name": name.title(),
                "deleted": False,
                "is_bot": is_bot,
                "is_admin": False,
                "tz": "Etc/UTC",
                "profile": {"real_name": name.title(), "display_name": name},
            }

    def add_channel(self, channel_id: str, *, member: bool = True) -> None:
        """Create a channel; `member=False` makes posts answer `not_in_channel`."""
        with self._lock:
            self._channels.setdefault(channel_id, _Channel(member=member)).member = member

    def user(self, user_id: str) -> Json:
        """users.info's `user` object; `user_not_found` for strangers."""
        with self._lock:
            if user_id not in self._users:
                raise SlackError("user_not_found")
            return copy.deepcopy(self._users[user_id])

    def usergroup_users(self, usergroup: str) -> list[str]:
        """Member ids of a user group, which approvals resolve approvers from."""
        with self._lock:
            if usergroup not in self._usergroups:
                raise SlackError("no_such_subteam")
            return list(self._usergroups[usergroup])

    def open_conversation(self, users: list[str]) -> tuple[str, bool]:
        """A DM (one user) or group DM id, stable per set of users; True if it existed."""
        with self._lock:
            for user in users:
                self.user(user)
            key = frozenset(users)
            if key in self._dms:
                return self._dms[key], True
            channel = self.next_id("D0" if len(key) == 1 else "G0")
            self._dms[key] = channel
            self._channels[channel] = _Channel(member=True)
            return channel, False

    def resolve_channel(self, channel: str) -> str:
        """The channel a post lands in; a user id means the app's DM with that user."""
        with self._lock:
            if channel in self._users:
                return self.open_conversation([channel])[0]
            state = self._channels.get(channel)
            if state is None:
                raise SlackError("channel_not_found")
            if not state.member:
                raise SlackError("not_in_channel")
            return channel

    # -- messages ------------------------------------------------------------------

    def post_message(self, channel: str, content: MessageContent, thread_ts: str | None) -> Json:
        """Post as the bot, which must be able to write to `channel`."""
        with self._lock:
            return self._append(self.resolve_channel(channel), content, thread_ts)

    def _append(self, channel: str, content: MessageContent, thread_ts: str | None) -> Json:
        # response_url posts skip the membership check: Slack lets a command answer
        # in any channel it was run in, so an unknown channel is created here.
        with self._lock:
            state = self._channels.setdefault(channel, _Channel(member=False))
            parent = self._thread_parent(state, thread_ts) if thread_ts else None
            ts = self.next_ts()
            message: Json = {
                "type": "message",
                "user": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": self.app_id,
                "team": self.team_id,
                "ts": ts,
                "text": content.text,
            }
            if content.blocks is not None:
                message["blocks"] = content.blocks
            if content.attachments is not None:
                message["attachments"] = content.attachments
            if parent is not None:
                message["thread_ts"] = parent
                state.replies.setdefault(parent, []).append(ts)
                root = state.messages[parent]
                root.update(thread_ts=parent, reply_count=len(state.replies[parent]))
            state.messages[ts] = message
            return copy.deepcopy(message)

    def _thread_parent(self, state: _Channel, thread_ts: str) -> str:
        if not _TS.match(thread_ts):
            raise SlackError("invalid_thread_ts")
        message = state.messages.get(thread_ts)
        if message is None:
            raise SlackError("thread_not_found")
        return str(message.get("thread_ts", thread_ts))

    def _stored(self, channel: str, ts: str) -> Json:
        state = self._channels.get(channel)
        if state is None:
            raise SlackError("channel_not_found")
        if ts not in state.messages:
            raise SlackError("message_not_found")
        return state.messages[ts]

    def update_message(
        self, channel: str, ts: str, content: MessageContent, fields: set[str]
    ) -> Json:
        """Replace the parts named in `fields` (`text`, `blocks`, `attachments`)."""
        with self._lock:
            message = self._stored(channel, ts)
            if "text" in fields:
                message["text"] = content.text
            for part, value in (("blocks", content.blocks), ("attachments", content.attachments)):
                if part in fields:
                    message.pop(part, None)
                    if value:
                        message[part] = value
            message["edited"] = {"user": self.bot_user_id, "ts": self.next_ts()}
            return copy.deepcopy(message)

    def delete_message(self, channel: str, ts: str) -> None:
        """Remove a message, as `delete_original` on a response_url does."""
        with self._lock:
            self._stored(channel, ts)
            del self._channels[channel].messages[ts]

    def permalink(self, channel: str, ts: str) -> str:
        """Slack's archive link; replies carry `thread_ts` and `cid` as Slack's do."""
        with self._lock:
            message = self._stored(channel, ts)
            link = f"https://{self.domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
            parent = message.get("thread_ts")
            if parent and parent != ts:
                link += f"?thread_ts={parent}&cid={channel}"
            return link

    def post_ephemeral(self, channel: str, user: str, content: MessageContent) -> str:
        """Show `content` to one user only; returns the ephemeral message_ts."""
        with self._lock:
            channel = self.resolve_channel(channel)
            self.user(user)
            return self._record_ephemeral(channel, user, content)

    def _record_ephemeral(self, channel: str, user: str, content: MessageContent) -> str:
        with self._lock:
            ts = self.next_ts()
            ephemeral: Json = {"channel": channel, "user": user, "ts": ts, "text": content.text}
            if content.blocks is not None:
                ephemeral["blocks"] = content.blocks
            self._ephemerals.setdefault(user, []).append(ephemeral)
            return ts

    def message(self, channel: str, ts: str) -> Json | None:
        """The latest version of one message, or None if it never existed or was deleted."""
        with self._lock:
            state = self._channels.get(channel)
            found = state.messages.get(ts) if state else None
            return copy.deepcopy(found)

    def messages(self, channel: str) -> list[Json]:
        """Top-level messages of a channel, oldest first (like conversations.history)."""
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                return []
            return [
                copy.deepcopy(m) for ts, m in state.messages.items() if m.get("thread_ts", ts) == ts
            ]

    def thread(self, channel: str, ts: str) -> list[Json]:
        """Replies to the message `ts`, oldest first, without the parent."""
        with self._lock:
            state = self._channels.get(channel)
            if state is None:
                return []
            replies = state.replies.get(ts, [])
            return [copy.deepcopy(state.messages[r]) for r in replies if r in state.messages]

    def ephemerals(self, user: str) -> list[Json]:
        """Everything shown to `user` alone, oldest first."""
        with self._lock:
            return copy.deepcopy(self._ephemerals.get(user, []))

    # -- response_url ---------------------------------------------------------------

    def mint_response_url(
        self, *, channel: str | None, user: str | None, message_ts: str | None
    ) -> str:
        """A fresh response_url id bound to the message or channel it answers."""
        with self._lock:
            url_id = secrets.token_hex(12)
            self._response_urls[url_id] = _ResponseUrl(self.now(), channel, user, message_ts)
            return url_id

    def check_response_url(self, url_id: str) -> None:
        """Raise (with a 404 meaning) as Slack does for an unknown, used or old URL."""
        with self._lock:
            entry = self._response_urls.get(url_id)
            if entry is None:
                raise SlackError("invalid_url")
            if self.now() - entry.minted_at > RESPONSE_URL_TTL:
                raise SlackError("expired_url")
            if len(entry.posts) >= RESPONSE_URL_MAX_POSTS:
                raise SlackError("used_url")

    def respond(self, url_id: str, body: Mapping[str, Any], content: MessageContent | None) -> None:
        """Apply one response_url post: replace, delete, post in channel or ephemerally."""
        with self._lock:
            self.check_response_url(url_id)
            entry = self._response_urls[url_id]
            if entry.channel and entry.message_ts and body.get("delete_original"):
                self.delete_message(entry.channel, entry.message_ts)
            elif content is not None and entry.channel:
                if entry.message_ts and body.get("replace_original"):
                    fields = {"text", "blocks", "attachments"}
                    self.update_message(entry.channel, entry.message_ts, content, fields)
                elif body.get("response_type") == "in_channel":
                    self._append(entry.channel, content, body.get("thread_ts"))
                elif entry.user:
                    self._record_ephemeral(entry.channel, entry.user, content)
            entry.posts.append(copy.deepcopy(dict(body)))

    def responses(self, url_id: str) -> list[Json]:
        """The bodies one response_url accepted, oldest first."""
        with self._lock:
            entry = self._response_urls.get(url_id)
            return copy.deepcopy(entry.posts) if entry else []
