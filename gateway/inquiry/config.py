"""The inquiry service's configuration file: where it listens, which gateway it calls through and as whom."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.core import identifiers as ids
from gateway.core.globalconf import ConfigurationAnchor
from gateway.core.settings import _check_url, _relative_to_file


class InquirySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    anchor: ConfigurationAnchor  # the global configuration lists the gateways to ask
    state_dir: Path  # keeps the last good global configuration
    gateway_url: str  # a gateway's client side, e.g. http://127.0.0.1:8080
    client: str  # the subsystem it asks as, registered at that gateway; the monitoring client sees everything
    host: str = "127.0.0.1"
    port: int = Field(4600, ge=0, le=65535)
    gateway_timeout_seconds: float = Field(5.0, gt=0, le=120)  # a gateway slower than this is reported, not awaited
    max_concurrency: int = Field(32, ge=1, le=512)  # gateways asked at once
    globalconf_refresh_seconds: float | None = Field(None, gt=0)

    resolve_paths = field_validator("state_dir")(_relative_to_file)

    @field_validator("gateway_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_url(value, ("http", "https"))

    @field_validator("client")
    @classmethod
    def _client(cls, value: str) -> str:
        try:
            ids.parse_client(value)
        except ids.IdentifierError as exc:
            raise ValueError(str(exc)) from None
        return value
