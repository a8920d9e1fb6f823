"""The cloud service's configuration: `CloudSettings` (YAML, then `OMNISENSE_CLOUD__FIELD=value`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edge.settings import ConfigModel, load_config

ENV_PREFIX = "OMNISENSE_CLOUD"


class CloudSettings(ConfigModel):
    db_url: str = Field("sqlite:///.omnisense/cloud.db", title="Database",
                        description="sqlite:///relative/path.db, sqlite:////absolute/path.db, or "
                        "postgresql://user:password@host:port/database (needs psycopg).")
    host: str = Field("127.0.0.1", description="Address the API listens on.")
    port: int = Field(8090, ge=0, le=65535, description="Port the API listens on (0: a free one).")
    admin_token: str | None = Field(None, description="Bearer token for the admin endpoints (store registration, "
                                    "exposure import). Unset: those endpoints are open - for a laptop only.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted, and "
                                "largest batch after decompression.")
    pool_min_size: int = Field(1, ge=1, description="PostgreSQL: connections the pool keeps open.")
    pool_max_size: int = Field(10, ge=1, description="PostgreSQL: most connections the pool opens; a request "
                               "waits (up to 30 s) for a free one beyond that.")

    @model_validator(mode="after")
    def _pool(self) -> CloudSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError(f"pool_min_size ({self.pool_min_size}) is above pool_max_size ({self.pool_max_size})")
        return self

    @field_validator("db_url")
    @classmethod
    def _db_url(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError(f"expected sqlite:///path or postgresql://user@host:port/db, got {value!r}")
        return value


def load_cloud_settings(path: Path | None, env: dict[str, str] | None = None) -> CloudSettings:
    return load_config(CloudSettings, path, ENV_PREFIX, env)
