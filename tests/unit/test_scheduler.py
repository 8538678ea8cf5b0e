"""Cron strings mean what crontab says, although APScheduler 3 counts weekdays from Monday."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.definitions.cron import crontab_weekdays
from bot.definitions.models import Trigger
from bot.scheduler import Schedule, trigger_timing


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("5-7", "sun,fri,sat"),
        ("0-6", "*"),
        ("MON-fri", "mon,tue,wed,thu,fri"),
        ("sat,0", "sun,sat"),
    ],
)
def test_weekday_numbers_count_from_sunday(field: str, names: str) -> None:
    assert crontab_weekdays(field) == names


def fire_times(schedule: str, start: datetime, count: int, zone: str = "UTC") -> list[datetime]:
    timing = trigger_timing(Trigger(schedule=schedule, timezone=zone))
    found: list[datetime] = []
    moment = timing.get_next_fire_time(None, start)
    while len(found) < count:
        found.append(moment)
        moment = timing.get_next_fire_time(moment, moment + timedelta(microseconds=1))
    return found


def test_sunday_is_zero() -> None:
    (first,) = fire_times("0 9 * * 0", datetime(2026, 2, 2, tzinfo=UTC), 1)
    assert first.strftime("%A %d") == "Sunday 08"


def test_day_of_month_or_weekday_as_in_crontab() -> None:
    days = [
        t.strftime("%a %d") for t in fire_times("0 9 14 * 5", datetime(2026, 2, 1, tzinfo=UTC), 4)
    ]
    assert days == ["Fri 06", "Fri 13", "Sat 14", "Fri 20"]


def test_latest_fire_within_the_grace_in_utc() -> None:
    trigger = Trigger(schedule="*/10 * * * *", timezone="Asia/Kolkata")
    schedule = Schedule(flow="f", index=0, trigger=trigger, timing=trigger_timing(trigger))
    now = datetime(2026, 2, 2, 3, 47, 30, tzinfo=UTC)  # 09:17:30 in Kolkata
    assert schedule.latest(now, timedelta(minutes=5)) is None
    latest = schedule.latest(now, timedelta(minutes=10))
    assert latest == datetime(2026, 2, 2, 3, 40, tzinfo=UTC)
    assert latest is not None and latest.tzinfo is UTC
