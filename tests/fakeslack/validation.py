"""Block Kit and view checks that make the fake reject what Slack rejects.

Each check collects every problem with a JSON pointer, the way Slack's
`response_metadata.messages` does, so a failing test shows which field broke the
limit rather than only `invalid_blocks`. The limits are Slack's published ones
(see shared/SLACK.md); only the block and element types Relay may use are known.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .errors import SlackError

Surface = Literal["message", "modal", "home"]

MAX_MESSAGE_TEXT = 40_000
MAX_BLOCKS = {"message": 50, "modal": 100, "home": 100}
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELD = 2_000
MAX_SECTION_FIELDS = 10
MAX_HEADER_TEXT = 150
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_LABEL = 2_000
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_URL = 3_000
MAX_VIEW_TITLE = 24
MAX_PRIVATE_METADATA = 3_000
MAX_CALLBACK_ID = 255
MAX_ATTACHMENTS = 100

_SELECTS = frozenset(
    {
        "static_select",
        "external_select",
        "users_select",
        "conversations_select",
        "channels_select",
        "multi_static_select",
        "multi_external_select",
        "multi_users_select",
        "multi_conversations_select",
        "multi_channels_select",
    }
)
_INPUTS = frozenset(
    {
        "plain_text_input",
        "number_input",
        "email_text_input",
        "url_text_input",
        "rich_text_input",
        "file_input",
    }
)
_PICKERS = frozenset(
    {"overflow", "datepicker", "timepicker", "datetimepicker", "checkboxes", "radio_buttons"}
)
_WITH_OPTIONS = frozenset(
    {"static_select", "multi_static_select", "overflow", "checkboxes", "radio_buttons"}
)
_INTERACTIVE = frozenset({"button"}) | _SELECTS | _PICKERS | _INPUTS
_RICH_TEXT_PARTS = frozenset(
    {"rich_text_section", "rich_text_list", "rich_text_preformatted", "rich_text_quote"}
)


class _Problems:
    """Collects Slack-style `[ERROR] ... [json-pointer:...]` lines."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def add(self, pointer: str, message: str) -> None:
        self.messages.append(f"[ERROR] {message} [json-pointer:{pointer}]")

    def text(self, value: Any, pointer: str, *, limit: int, plain_only: bool = False) -> None:
        """A composition text object: `{"type": "plain_text"|"mrkdwn", "text": ...}`."""
        if not isinstance(value, Mapping):
            self.add(pointer, "must provide an object")
            return
        allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
        if value.get("type") not in allowed:
            self.add(f"{pointer}/type", f"must be one of {', '.join(allowed)}")
        self.string(value.get("text"), f"{pointer}/text", limit=limit, minimum=1)

    def string(self, value: Any, pointer: str, *, limit: int, minimum: int = 0) -> None:
        if not isinstance(value, str):
            self.add(pointer, "must be a string")
        elif len(value) < minimum:
            self.add(pointer, f"must be more than {minimum - 1} characters")
        elif len(value) > limit:
            self.add(pointer, f"must be less than {limit + 1} characters")

    def optional_string(self, value: Any, pointer: str, *, limit: int) -> None:
        if value is not None:
            self.string(value, pointer, limit=limit)

    def items(self, value: Any, pointer: str, *, low: int, high: int) -> list[Any]:
        """A list with a length window; returns the list (empty if it is not one)."""
        if not isinstance(value, list):
            self.add(pointer, "must provide an array")
            return []
        if len(value) < low:
            self.add(pointer, f"must provide at least {low} items")
        if len(value) > high:
            self.add(pointer, f"no more than {high} items allowed")
        return value


def _element(p: _Problems, element: Any, pointer: str, *, allowed: frozenset[str]) -> None:
    if not isinstance(element, Mapping):
        p.add(pointer, "must provide an object")
        return
    kind = element.get("type")
    if kind == "image" and "image" in allowed:
        _image(p, element, pointer)
        return
    if kind not in allowed:
        p.add(f"{pointer}/type", f"unsupported element type {kind!r}")
        return
    p.optional_string(element.get("action_id"), f"{pointer}/action_id", limit=MAX_ACTION_ID)
    if kind == "button":
        p.text(element.get("text"), f"{pointer}/text", limit=MAX_BUTTON_TEXT, plain_only=True)
        p.optional_string(element.get("value"), f"{pointer}/value", limit=MAX_BUTTON_VALUE)
        p.optional_string(element.get("url"), f"{pointer}/url", limit=MAX_URL)
        if element.get("style") not in (None, "primary", "danger"):
            p.add(f"{pointer}/style", "must be one of primary, danger")
    elif kind in _WITH_OPTIONS and "option_groups" not in element:
        high = 5 if kind == "overflow" else MAX_OPTIONS
        options = p.items(element.get("options"), f"{pointer}/options", low=1, high=high)
        for i, option in enumerate(options):
            _option(p, option, f"{pointer}/options/{i}")


def _option(p: _Problems, option: Any, pointer: str) -> None:
    if not isinstance(option, Mapping):
        p.add(pointer, "must provide an object")
        return
    p.text(option.get("text"), f"{pointer}/text", limit=MAX_OPTION_TEXT)
    p.string(option.get("value"), f"{pointer}/value", limit=MAX_OPTION_VALUE, minimum=1)


def _image(p: _Problems, image: Mapping[str, Any], pointer: str) -> None:
    if "image_url" in image:
        p.string(image["image_url"], f"{pointer}/image_url", limit=MAX_URL, minimum=1)
    elif "slack_file" not in image:
        p.add(pointer, "must provide image_url or slack_file")
    p.string(image.get("alt_text"), f"{pointer}/alt_text", limit=MAX_LABEL, minimum=1)


def _block(p: _Problems, block: Any, pointer: str) -> None:
    kind = block.get("type")
    if kind == "section":
        if "text" not in block and "fields" not in block:
            p.add(pointer, "must provide text or fields")
        if "text" in block:
            p.text(block["text"], f"{pointer}/text", limit=MAX_SECTION_TEXT)
        if "fields" in block:
            fields = p.items(block["fields"], f"{pointer}/fields", low=1, high=MAX_SECTION_FIELDS)
            for i, field in enumerate(fields):
                p.text(field, f"{pointer}/fields/{i}", limit=MAX_SECTION_FIELD)
        if "accessory" in block:
            allowed = (_INTERACTIVE - _INPUTS) | {"image"}
            _element(p, block["accessory"], f"{pointer}/accessory", allowed=allowed)
    elif kind == "header":
        p.text(block.get("text"), f"{pointer}/text", limit=MAX_HEADER_TEXT, plain_only=True)
    elif kind == "actions":
        elements = p.items(
            block.get("elements"), f"{pointer}/elements", low=1, high=MAX_ACTIONS_ELEMENTS
        )
        seen: set[str] = set()
        for i, element in enumerate(elements):
            _element(p, element, f"{pointer}/elements/{i}", allowed=_INTERACTIVE)
            action_id = element.get("action_id") if isinstance(element, Mapping) else None
            if isinstance(action_id, str):
                if action_id in seen:
                    p.add(f"{pointer}/elements/{i}/action_id", "action_id must be unique")
                seen.add(action_id)
    elif kind == "context":
        elements = p.items(
            block.get("elements"), f"{pointer}/elements", low=1, high=MAX_CONTEXT_ELEMENTS
        )
        for i, element in enumerate(elements):
            if isinstance(element, Mapping) and element.get("type") == "image":
                _image(p, element, f"{pointer}/elements/{i}")
            else:
                p.text(element, f"{pointer}/elements/{i}", limit=MAX_SECTION_TEXT)
    elif kind == "input":
        p.text(block.get("label"), f"{pointer}/label", limit=MAX_LABEL, plain_only=True)
        _element(p, block.get("element"), f"{pointer}/element", allowed=_INTERACTIVE - {"button"})
        if "hint" in block:
            p.text(block["hint"], f"{pointer}/hint", limit=MAX_LABEL, plain_only=True)
    elif kind == "image":
        _image(p, block, pointer)
        if "title" in block:
            p.text(block["title"], f"{pointer}/title", limit=MAX_LABEL, plain_only=True)
    elif kind == "rich_text":
        parts = p.items(block.get("elements"), f"{pointer}/elements", low=1, high=MAX_OPTIONS)
        for i, part in enumerate(parts):
            _rich_text_part(p, part, f"{pointer}/elements/{i}")
    elif kind != "divider":
        p.add(f"{pointer}/type", f"unsupported block type {kind!r}")


def _rich_text_part(p: _Problems, part: Any, pointer: str) -> None:
    if not isinstance(part, Mapping) or part.get("type") not in _RICH_TEXT_PARTS:
        p.add(f"{pointer}/type", "must be a rich_text section, list, preformatted or quote")
        return
    for i, leaf in enumerate(p.items(part.get("elements"), f"{pointer}/elements", low=0, high=500)):
        if not isinstance(leaf, Mapping) or not isinstance(leaf.get("type"), str):
            p.add(f"{pointer}/elements/{i}/type", "must provide a type")


def block_problems(blocks: Any, *, surface: Surface, pointer: str = "/blocks") -> list[str]:
    """Every reason Slack would refuse `blocks` on `surface`; empty when valid."""
    p = _Problems()
    block_ids: set[str] = set()
    for i, block in enumerate(p.items(blocks, pointer, low=0, high=MAX_BLOCKS[surface])):
        here = f"{pointer}/{i}"
        if not isinstance(block, Mapping):
            p.add(here, "must provide an object")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            p.string(block_id, f"{here}/block_id", limit=MAX_BLOCK_ID, minimum=1)
            if block_id in block_ids:
                p.add(f"{here}/block_id", "duplicate block_id")
            if isinstance(block_id, str):
                block_ids.add(block_id)
        _block(p, block, here)
    return p.messages


def view_problems(view: Any, *, kinds: tuple[str, ...]) -> list[str]:
    """Every reason Slack would refuse `view` (of one of `kinds`); empty when valid."""
    p = _Problems()
    if not isinstance(view, Mapping):
        p.add("/view", "must provide an object")
        return p.messages
    kind = view.get("type")
    if kind not in kinds:
        p.add("/view/type", f"must be one of {', '.join(kinds)}")
        return p.messages
    if kind == "modal":
        p.text(view.get("title"), "/view/title", limit=MAX_VIEW_TITLE, plain_only=True)
        for button in ("submit", "close"):
            if button in view:
                p.text(view[button], f"/view/{button}", limit=MAX_VIEW_TITLE, plain_only=True)
        blocks = view.get("blocks")
        has_input = isinstance(blocks, list) and any(
            isinstance(b, Mapping) and b.get("type") == "input" for b in blocks
        )
        if has_input and "submit" not in view:
            p.add("/view/submit", "must provide submit when the view has input blocks")
    p.optional_string(view.get("callback_id"), "/view/callback_id", limit=MAX_CALLBACK_ID)
    p.optional_string(view.get("external_id"), "/view/external_id", limit=MAX_CALLBACK_ID)
    p.optional_string(
        view.get("private_metadata"), "/view/private_metadata", limit=MAX_PRIVATE_METADATA
    )
    surface: Surface = "modal" if kind == "modal" else "home"
    p.messages.extend(block_problems(view.get("blocks"), surface=surface, pointer="/view/blocks"))
    return p.messages


def decode_json_arg(value: Any, *, error: str) -> Any:
    """A JSON argument that may arrive decoded (JSON body) or as a string (form body)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise SlackError(error) from None


@dataclass(frozen=True)
class MessageContent:
    """The content part of a message, already validated."""

    text: str
    blocks: list[Any] | None
    attachments: list[Any] | None
    warnings: tuple[str, ...]


def message_content(args: Mapping[str, Any], *, require: bool = True) -> MessageContent:
    """Validate `text` / `blocks` / `attachments` as chat.postMessage does.

    `require=False` is chat.update's rule: a call may leave the content unchanged.
    """
    text = args.get("text")
    text = "" if text is None else str(text)
    if len(text) > MAX_MESSAGE_TEXT:
        raise SlackError("msg_too_long")
    blocks = decode_json_arg(args.get("blocks"), error="invalid_blocks_format")
    if blocks is not None and not isinstance(blocks, list):
        raise SlackError("invalid_blocks_format")
    if blocks:
        problems = block_problems(blocks, surface="message")
        if problems:
            raise SlackError("invalid_blocks", problems)
    attachments = decode_json_arg(args.get("attachments"), error="invalid_attachments")
    if attachments is not None and not isinstance(attachments, list):
        raise SlackError("invalid_attachments")
    if attachments and len(attachments) > MAX_ATTACHMENTS:
        raise SlackError("too_many_attachments")
    if require and not (text.strip() or blocks or attachments):
        raise SlackError("no_text")
    warnings = ("missing_text_in_blocks",) if blocks and not text.strip() else ()
    return MessageContent(text, blocks or None, attachments or None, warnings)
