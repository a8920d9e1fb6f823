"""The uploader's configuration: `UploaderSettings`, read by `load_uploader_settings` (YAML, then
`OMNISENSE_UPLOADER__FIELD=value` environment overrides, then validation)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from edge.settings import ConfigModel, load_config

ENV_PREFIX = "OMNISENSE_UPLOADER"


class UploaderSettings(ConfigModel):
    store_id: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$",
                          title="Store", description="This store's id, as registered in the cloud.")
    gateway_db: Path = Field(Path(".omnisense/gateway.db"), description="The gateway's SQLite database "
                             "(opened read-only).")
    outbox: Path = Field(Path(".omnisense/uploader.db"), description="The uploader's own SQLite outbox.")
    cloud_url: str = Field("http://127.0.0.1:8090", description="Base URL of the cloud ingest API.")
    key_file: Path = Field(Path(".omnisense/store_key.pem"), description="The store's Ed25519 private key (PEM, "
                           "PKCS#8). `omnisense upload keygen` writes it; its public half is registered in the cloud.")
    k: int = Field(5, ge=2, description="Minimum group size: an hourly cell describing fewer visitors than this "
                   "never leaves the store (see cloud_sync.uploader.anonymity).")
    pseudonym_secret_file: Path | None = Field(
        None, description="Secret keying the per-campaign app pseudonyms: a text file holding one line of at least 16 "
        "characters (e.g. `openssl rand -hex 32`; surrounding whitespace is ignored), shared with "
        "whoever records the ad exposures so both sides compute the same pseudonym. Default: the store key.")
    campaigns: list[str] = Field([], description="Campaigns whose app visits are uploaded (one pseudonymous row per "
                                 "visit and campaign). Empty: no app visits leave the store.")
    batch_size: int = Field(500, ge=1, le=10_000, description="Items per batch.")
    interval_s: float = Field(60.0, gt=0, description="How often to look for newly finished hours.")
    settle_s: float = Field(3900.0, ge=0, description="An hour is exported once its end is this old (s): the gateway "
                            "recomputes the current and the previous hour, so its figures are final by then.")
    start_at: float | None = Field(None, description="Epoch seconds of the first hour to export when the outbox "
                                   "is new. Default: the first hour in the gateway database.")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout of one upload.")
    backoff_initial_s: float = Field(1.0, gt=0, description="First retry delay after a failed upload.")
    backoff_max_s: float = Field(300.0, gt=0, description="Cap of the retry delay (exponential, ±20% jitter).")
    keep_acked_days: float = Field(7.0, ge=0, description="Acknowledged batches are kept this long for audit.")

    @field_validator("cloud_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected http://host:port or https://host, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _backoff(self) -> UploaderSettings:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(f"backoff_max_s ({self.backoff_max_s}) must be at least backoff_initial_s "
                             f"({self.backoff_initial_s})")
        return self


def load_uploader_settings(path: Path | None, env: dict[str, str] | None = None) -> UploaderSettings:
    """Raises edge.settings.ConfigError with a message naming the field on any problem."""
    return load_config(UploaderSettings, path, ENV_PREFIX, env)
