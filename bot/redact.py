"""Secret masking shared by logs, the CLI, chat messages and stored step outputs.

A secret is masked wherever it appears, not only where it was put: a server that
echoes an ``Authorization`` header back in an error body must not reveal the
token in Slack. So the redactor matches each secret's value, its percent-encoded
forms (it may travel in a URL or a form) and its JSON-escaped form (it may come
back inside a JSON string). Values shorter than ``MIN_SECRET_LENGTH`` are left
alone: masking every ``"1"`` would make output unreadable without hiding anything.

Header-like keys (``Authorization``, ``Cookie``, ``X-Api-Key``, anything with
``token``, ``secret`` or ``password`` in its name) are masked whatever their value,
because credentials that were never declared as secrets travel there too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
MIN_SECRET_LENGTH = 4

_SENSITIVE_NAME = re.compile(
    r"authorization|cookie|api[-_]?key|token|secret|password|passwd", re.IGNORECASE
)


def is_sensitive_name(name: str) -> bool:
    """Whether a header or field with this name holds a credential by convention."""
    return _SENSITIVE_NAME.search(name) is not None


def _variants(secret: str) -> set[str]:
    """The forms a secret takes in URLs, form bodies and JSON strings."""
    return {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}


@lru_cache(maxsize=64)
def _pattern(secrets: frozenset[str]) -> re.Pattern[str] | None:
    """One pattern for every form of every secret, or None when there is nothing to mask.

    Built once per distinct set of secrets: an HTTP step builds a redactor for each
    attempt from its run's secrets, and the forms cost more to build than the request.
    """
    forms = {
        form
        for secret in secrets
        if len(secret) >= MIN_SECRET_LENGTH
        for form in _variants(secret)
        if len(form) >= MIN_SECRET_LENGTH
    }
    # Longest first, so a secret that contains another is masked whole.
    ordered = sorted(forms, key=lambda form: (-len(form), form))
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


class Redactor:
    """Replaces known secret values with ``***``; pure and cheap to build per run."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._pattern = _pattern(frozenset(secrets))

    def mask(self, text: str) -> str:
        """``text`` with every occurrence of a secret replaced by ``***``."""
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def mask_data(self, value: Any, *, by_name: bool = True) -> Any:
        """Mask strings inside nested mappings and sequences; other values pass through.

        With ``by_name`` (the default) the value under any sensitive key, such as an
        ``Authorization`` header, becomes ``***`` too. Step outputs pass
        ``by_name=False`` for response bodies so that the parsed JSON matches the
        masked text of the same body.
        """
        if self._pattern is None and not by_name:
            return value  # nothing could change: no copy
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, Mapping):
            return {
                (self.mask(key) if isinstance(key, str) else key): (
                    MASK
                    if by_name and isinstance(key, str) and is_sensitive_name(key)
                    else self.mask_data(item, by_name=by_name)
                )
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [self.mask_data(item, by_name=by_name) for item in value]
        if isinstance(value, tuple):
            return tuple(self.mask_data(item, by_name=by_name) for item in value)
        return value
