"""Loading component configuration: YAML file, then environment overrides, then pydantic validation.

Every component (node, gateway, ...) has one model deriving from `ConfigModel`. A typo is an error
(`extra="forbid"`), and a bad file fails at start-up with a message naming the field and the reason.
Environment overrides use `PREFIX__SECTION__FIELD=value`, e.g. `OMNISENSE_NODE__MQTT__PORT=1884`;
values are parsed as YAML scalars, so `true`, `12` and `[a, b]` mean what they look like.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

M = TypeVar("M", bound=BaseModel)


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ConfigError(Exception):
    """A configuration that cannot be used; str() is the message for the user."""


class MqttSettings(ConfigModel):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="Broker address: mqtt://host:port or mqtts://host:port (TLS).",
    )
    username: str | None = None
    password: str | None = Field(None, repr=False, description="Prefer password_file: config files get copied around.")
    password_file: Path | None = Field(None, description="File whose first line is the password (what a claim writes).")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate (mqtts).")
    protocol: str = Field(
        "auto",
        description="'5', '3.1.1', or 'auto': MQTT 5, falling back to 3.1.1 when the broker refuses 5.",
    )
    keepalive_s: int = Field(15, ge=5, le=3600)
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, description="How long the broker keeps our session.")
    reconnect_min_s: float = Field(0.2, gt=0)
    reconnect_max_s: float = Field(10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {value!r}")
        try:
            parts.port
        except ValueError as err:
            raise ValueError(f"bad port in {value!r}: {err}") from None
        return value

    @field_validator("protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        if value not in ("auto", "5", "3.1.1"):
            raise ValueError(f"expected 'auto', '5' or '3.1.1', got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def secret(self) -> str | None:
        """The password, read from `password_file` when given; ConfigError naming the file if unreadable."""
        if self.password_file is None:
            return self.password
        try:
            return self.password_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError) as err:
            reason = "it is empty" if isinstance(err, IndexError) else (err.strerror or str(err))
            raise ConfigError(f"mqtt.password_file {self.password_file}: cannot read the password: {reason}") from None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


def load_config(model: type[M], path: Path | None, env_prefix: str, env: dict[str, str] | None = None) -> M:
    """Read `path` (optional), apply environment overrides, validate; raise ConfigError on any problem."""
    data: dict[str, Any] = {}
    where = str(path) if path else "defaults"
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"{path}: cannot read configuration: {err.strerror or err}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(loaded).__name__}")
        data = loaded
    overrides = _env_overrides(env_prefix, os.environ if env is None else env)
    for keys, value in overrides:
        _set_nested(data, keys, value)
    if overrides:
        where += " + " + ", ".join(env_prefix + "__" + "__".join(k).upper() for k, _ in overrides)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: invalid configuration:\n{format_validation_error(exc)}") from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        field = prefix + (".".join(str(p) for p in err["loc"]) or "(top level)")
        reason = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, dict) or err["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  {field}: {reason}{shown}")
    return "\n".join(lines)


def _env_overrides(prefix: str, env: Any) -> list[tuple[list[str], Any]]:
    head = prefix + "__"
    found = []
    for name in sorted(env):
        if name.startswith(head) and len(name) > len(head):
            keys = [k.lower() for k in name[len(head) :].split("__")]
            found.append((keys, yaml.safe_load(env[name]) if env[name] != "" else None))
    return found


def _set_nested(data: dict[str, Any], keys: list[str], value: Any) -> None:
    for key in keys[:-1]:
        child = data.get(key)
        if not isinstance(child, dict):
            child = data[key] = {}
        data = child
    data[keys[-1]] = value
