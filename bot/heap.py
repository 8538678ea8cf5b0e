"""Garbage collection for the long-running processes (``relay serve``, ``relay worker``).

Start-up leaves about 150,000 tracked objects (flows, Bolt, SQLAlchemy's
compiled statements, slack_sdk's models) that live as long as the process. A
full collection walks all of them: on the Slack load benchmark one landed in a
burst of requests and held every acknowledgement behind it for 75 ms
(``bench/slack_load.py``). Freezing them once start-up is done takes them out
of every later collection; whatever the process makes afterwards is collected
as usual.
"""

from __future__ import annotations

import gc


def freeze_startup() -> None:
    """Collect start-up's garbage, then keep the survivors out of future collections."""
    gc.collect()
    gc.freeze()
