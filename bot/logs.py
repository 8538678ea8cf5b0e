"""Logging for the long-running commands: readable on a terminal, JSON lines in production.

Relay's modules log through the standard ``logging`` module; structlog's
formatter renders every record, Relay's and its libraries' alike, so one
setting (``RELAY_LOG_FORMAT=json``) turns the whole process into JSON lines a
log pipeline can index.
"""

from __future__ import annotations

import logging
import sys

import structlog

from bot.settings import Settings


def configure(settings: Settings) -> None:
    """Route every log record to stderr at ``RELAY_LOG_LEVEL``, as console text or JSON."""
    shared: list[structlog.types.Processor] = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if settings.processes > 1:
        # Replicas of one `relay serve` write to the same stream: say whose line it is.
        shared.append(
            structlog.processors.CallsiteParameterAdder(
                {structlog.processors.CallsiteParameter.PROCESS}
            )
        )
    renderer: structlog.types.Processor
    if settings.log_format == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
