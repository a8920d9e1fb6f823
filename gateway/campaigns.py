"""Campaigns for proximity offers: the schema of `config/campaigns.example.yaml` and of the API's campaigns.

A campaign says what to push (`offer`), on which shopper event (`trigger`), to whom (`audience`), when
(`schedule`, `quiet_hours`, in the campaign's timezone) and how often (caps and cooldown). The file also
holds the store-wide `budget`, which bounds what all campaigns together may send. The rules themselves
run in `gateway.offers`; this module only says what a valid campaign is, so a typo or an impossible
window fails at load time with the field named, not at 3 a.m. in a shopper's pocket.
"""

from __future__ import annotations

import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AwareDatetime, Field, field_validator, model_validator

from edge.protocol import Identifier
from edge.settings import ConfigModel, load_config

ENV_PREFIX = "OMNISENSE_CAMPAIGNS"

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def check_timezone(value: str) -> str:
    """An IANA name that this machine's tz database knows; offsets like '+01:00' would ignore DST."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}; use an IANA name such as 'Europe/Berlin'") from None
    return value


class TimeWindow(ConfigModel):
    """Local wall-clock window [start, end); end before start wraps past midnight (21:00-08:00).

    Written in YAML as "HH:MM-HH:MM" or as {start, end}.
    """

    start: time
    end: time

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _WINDOW_RE.match(value)
        if match is None:
            raise ValueError(f"expected 'HH:MM-HH:MM' in local time (may wrap midnight, e.g. 21:00-08:00), "
                             f"got {value!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        try:
            return {"start": time(h1, m1), "end": time(h2, m2)}
        except ValueError as err:
            raise ValueError(f"bad time in {value!r}: {err}") from None

    @model_validator(mode="after")
    def _not_empty(self) -> TimeWindow:
        if self.start == self.end:
            raise ValueError(f"start and end are both {self.start:%H:%M}: an empty or a whole-day window is "
                             f"ambiguous; leave the window out for 'always'")
        if self.start.tzinfo is not None or self.end.tzinfo is not None:
            raise ValueError("times are local to the campaign's timezone; leave out the UTC offset")
        return self

    def contains(self, local: time) -> bool:
        """Whether a local wall-clock time falls inside the window."""
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


class Offer(ConfigModel):
    title: str = Field(min_length=1, max_length=120, description="The push notification's title.")
    body: str = Field("", max_length=1000, description="The push notification's text.")
    url: str | None = Field(None, description="Where tapping the push leads (https://... or an app deep link).")
    code: str | None = Field(None, min_length=1, max_length=64, description="A voucher code shown to the shopper.")
    data: dict[str, str] = Field(default_factory=dict, description="Extra key/values handed to the app as-is.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$", value):
            raise ValueError(f"expected an absolute URL such as https://shop.example/offer, got {value!r}")
        return value


class ZoneEnterTrigger(ConfigModel):
    kind: Literal["zone_enter"]
    zone: Identifier


class DwellTrigger(ConfigModel):
    """Once per stay in `zone`, when the shopper has been there `min_s` seconds."""

    kind: Literal["dwell"]
    zone: Identifier
    min_s: float = Field(gt=0, le=24 * 3600)


class ZoneExitTrigger(ConfigModel):
    kind: Literal["zone_exit"]
    zone: Identifier


class FirstVisitTrigger(ConfigModel):
    kind: Literal["first_visit"]


class ReturnAfterTrigger(ConfigModel):
    """An arrival at least `days` days after the install's previous visit."""

    kind: Literal["return_after"]
    days: float = Field(gt=0)


Trigger = Annotated[
    ZoneEnterTrigger | DwellTrigger | ZoneExitTrigger | FirstVisitTrigger | ReturnAfterTrigger,
    Field(discriminator="kind"),
]


class AudienceRule(ConfigModel):
    segments: list[Identifier] = Field(
        default_factory=list,
        description="The install must be in at least one of these; empty means every consented install.",
    )
    exclude_segments: list[Identifier] = Field(default_factory=list, description="Never to installs in any of these.")

    @model_validator(mode="after")
    def _disjoint(self) -> AudienceRule:
        both = sorted(set(self.segments) & set(self.exclude_segments))
        if both:
            raise ValueError(f"segments {both} are both included and excluded")
        return self


class Schedule(ConfigModel):
    start: AwareDatetime | None = Field(None, description="First moment the campaign may send (with UTC offset).")
    end: AwareDatetime | None = Field(None, description="The campaign sends nothing from this moment on.")
    days_of_week: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS), min_length=1,
        description="Local days on which it may send (mon..sun).",
    )
    hours: TimeWindow | None = Field(None, description="Local hours in which it may send; none means all day.")

    @model_validator(mode="after")
    def _ordered(self) -> Schedule:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} is not after start {self.start.isoformat()}")
        return self


class Campaign(ConfigModel):
    id: Identifier
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = Field(True, description="A paused campaign matches nothing and records nothing.")
    offer: Offer
    trigger: Trigger
    audience: AudienceRule = AudienceRule()
    schedule: Schedule = Schedule()
    quiet_hours: TimeWindow | None = Field(None, description="Local hours in which nothing is sent, e.g. 21:00-08:00.")
    timezone: str | None = Field(None, description="IANA timezone of schedule, quiet hours and days; "
                                                   "default: the file's timezone.")
    max_per_install_per_day: int = Field(1, ge=1, description="Sends of this campaign to one install per local day.")
    max_per_install_total: int | None = Field(None, ge=1, description="Sends of this campaign to one install, ever.")
    cooldown_s: float = Field(0, ge=0, description="Least time between two sends of this campaign to one install.")
    max_total: int | None = Field(None, ge=1, description="The campaign's budget: sends to all installs, ever.")
    priority: int = Field(0, description="When several campaigns match one event, the highest sends.")

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        return None if value is None else check_timezone(value)


class GlobalBudget(ConfigModel):
    """Bounds across all campaigns, so several well-behaved campaigns do not add up to spam."""

    max_offers_per_install_per_day: int = Field(3, ge=1, description="Sends to one install per local day.")
    min_gap_s: float = Field(600, ge=0, description="Least time between any two sends to one install.")
    max_offers_per_day: int | None = Field(None, ge=1, description="Sends in the whole store per local day.")


class CampaignsFile(ConfigModel):
    timezone: str = Field(description="The store's IANA timezone: its local day for the budget, and the default "
                                      "for campaigns.")
    budget: GlobalBudget = GlobalBudget()
    campaigns: list[Campaign] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return check_timezone(value)

    @model_validator(mode="after")
    def _unique_ids(self) -> CampaignsFile:
        seen: set[str] = set()
        for campaign in self.campaigns:
            if campaign.id in seen:
                raise ValueError(f"campaign id {campaign.id!r} is used twice")
            seen.add(campaign.id)
        return self

    def timezone_of(self, campaign: Campaign) -> str:
        return campaign.timezone or self.timezone


def load_campaigns(path: Path, env: dict[str, str] | None = None) -> CampaignsFile:
    """Read and validate a campaigns file; raises `edge.settings.ConfigError` naming the field and the reason.

    Environment variables `OMNISENSE_CAMPAIGNS__BUDGET__MIN_GAP_S=...` override scalars (default: os.environ).
    """
    return load_config(CampaignsFile, path, ENV_PREFIX, env)
