"""The store's daily salt for device pseudonyms: random per day, held in memory only.

The gateway draws a fresh 32-byte salt when a day starts (in the store's timezone) and hands it to
the store's nodes in their retained config; yesterday's is forgotten, so pseudonyms of different
days cannot be linked by anyone, the gateway included. A gateway restarted mid-day draws a new
salt: devices get new pseudonyms from then on, which splits visits that straddle the restart but
keeps the rule that no salt is ever written to disk by omnisense.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable
from zoneinfo import ZoneInfo

SALT_BYTES = 32


def local_today(timezone: str | None) -> Callable[[], dt.date]:
    """Today's date in the store's IANA timezone, or in the machine's local time when None."""
    zone = ZoneInfo(timezone) if timezone else None
    return lambda: dt.datetime.now(zone).date() if zone else dt.datetime.now().astimezone().date()


class DailySalt:
    def __init__(self, today: Callable[[], dt.date]) -> None:
        self._today = today
        self._lock = threading.Lock()  # the MQTT thread (on connect) and the daily timer both ask
        self.day: dt.date | None = None
        self._salt = b""

    def __repr__(self) -> str:
        return f"DailySalt(day={self.day})"

    def current(self) -> tuple[dt.date, bytes]:
        """Today's salt, drawn on the first call of the day."""
        with self._lock:
            day = self._today()
            if day != self.day:
                self.day, self._salt = day, secrets.token_bytes(SALT_BYTES)
            return self.day, self._salt

    def changed(self) -> bool:
        """True when a new day has started since the salt was last handed out."""
        return self._today() != self.day
