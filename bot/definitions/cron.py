"""Cron strings as crontab reads them, on APScheduler 3's triggers.

APScheduler 3 counts weekdays from Monday and ANDs day-of-month with weekday;
crontab counts from Sunday (0 or 7) and ORs the two when both are restricted.
Flows are written in crontab's meaning, so both the flow checks and the
scheduler build their triggers here.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_trigger(schedule: str, timezone: str) -> BaseTrigger:
    """The APScheduler trigger that fires when crontab would for ``schedule``.

    Raises ValueError for anything that is not five valid crontab fields.
    """
    fields = schedule.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    zone = ZoneInfo(timezone)

    def cron(day: str, weekday: str) -> CronTrigger:
        return CronTrigger(
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=crontab_weekdays(weekday),
            timezone=zone,
        )

    if not day.startswith("*") and not weekday.startswith("*"):
        return OrTrigger([cron(day, "*"), cron("*", weekday)])
    return cron(day, weekday)


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field (Sunday = 0 or 7) as APScheduler 3 day names.

    Anything else is passed through for APScheduler to accept or refuse.
    """
    days: set[int] = set()
    try:
        for item in field.lower().split(","):
            span, _, step_text = item.partition("/")
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = 0, 6
            elif "-" in span:
                low, high = span.split("-", 1)
                first, last = _day(low), _day(high)
            else:
                first = _day(span)
                last = 6 if step_text else first
            if step < 1 or first > last:
                return field
            days.update(number % 7 for number in range(first, last + 1, step))
    except ValueError:
        return field
    if len(days) == 7:
        return "*"
    return ",".join(_DAY_NAMES[number] for number in sorted(days))


def _day(text: str) -> int:
    if text in _DAY_NAMES:
        return _DAY_NAMES.index(text)
    number = int(text)
    if not 0 <= number <= 7:
        raise ValueError(text)
    return number
