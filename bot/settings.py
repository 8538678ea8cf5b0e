"""Configuration, read once from the environment or ``.env``: the only reader of os.environ.

Everything else receives a frozen ``Settings`` (or the values it needs), so tests
build one explicitly instead of patching the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError

DEFAULT_SLACK_API_URL = "https://slack.com/api/"


class Settings(BaseSettings):
    """Relay's settings. Environment variables win over ``.env``."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    database_url: str = Field(default="sqlite:///relay.db", validation_alias="DATABASE_URL")
    flows_dir: Path = Field(default=Path("flows"), validation_alias="RELAY_FLOWS_DIR")
    alert_channel: str | None = Field(default=None, validation_alias="RELAY_ALERT_CHANNEL")
    http_allow_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), validation_alias="RELAY_HTTP_ALLOW_HOSTS"
    )
    """Comma-separated host names HTTP steps may call; empty allows any host."""
    worker_id: str | None = Field(default=None, validation_alias="RELAY_WORKER_ID")
    directory_file: Path | None = Field(default=None, validation_alias="RELAY_DIRECTORY_FILE")
    """A YAML file mapping user-group ids to member ids, for runs outside Slack."""
    sqlite_synchronous: str = Field(default="NORMAL", validation_alias="RELAY_SQLITE_SYNCHRONOUS")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", validation_alias="RELAY_LOG_LEVEL"
    )
    log_format: Literal["console", "json"] = Field(
        default="console", validation_alias="RELAY_LOG_FORMAT"
    )

    slack_bot_token: SecretStr | None = Field(default=None, validation_alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(
        default=None, validation_alias="SLACK_SIGNING_SECRET"
    )
    slack_app_token: SecretStr | None = Field(default=None, validation_alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default=DEFAULT_SLACK_API_URL, validation_alias="SLACK_API_URL")
    port: int = Field(default=3000, validation_alias="PORT")
    processes: int = Field(default=1, ge=1, le=64, validation_alias="WEB_CONCURRENCY")
    """How many ``relay serve`` processes share the port; the name Heroku and gunicorn use."""

    @field_validator("http_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip().lower() for host in value.split(",") if host.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _synchronous(cls, value: str) -> str:
        allowed = {"FULL", "NORMAL", "EXTRA"}
        if value.upper() not in allowed:
            raise ValueError(f"RELAY_SQLITE_SYNCHRONOUS must be one of {sorted(allowed)}")
        return value.upper()


def load_settings(**overrides: object) -> Settings:
    """Read the settings, turning a malformed value into one ConfigError line."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except SettingsError as exc:
        raise ConfigError(f"bad setting: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(part) for part in first["loc"]) or "settings"
        raise ConfigError(f"bad setting {name}: {first['msg']}") from None


def environment() -> Mapping[str, str]:
    """The process environment, for flow ``secrets`` and ``services`` read at run time."""
    return dict(os.environ)
