"""The JSON Schema of the flow format, for editors and other tools.

Generated from the models, so it cannot drift from what the loader accepts;
the cross-field checks (``relay validate``) still go beyond what a schema says.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from bot.definitions.models import FlowDef
from bot.definitions.values import format_duration

SCHEMA_ID = "urn:relay:schema:flow:1"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


class _FlowSchema(GenerateJsonSchema):
    """Pydantic writes duration defaults as ISO 8601 (``PT30S``); authors write ``30s``."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        return super().encode_default(dft)


def flow_schema() -> dict[str, Any]:
    """The schema of one flow file, keys spelt as in YAML (``json``, ``as``)."""
    generated = FlowDef.model_json_schema(by_alias=True, schema_generator=_FlowSchema)
    generated.pop("title", None)
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, "title": "Relay flow", **generated}
