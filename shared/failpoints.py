"""Failpoints: named places in a service where a reliability test can make the process die.

`FAILPOINTS=checkout.saga.after.HOLD_MONEY,...` (names separated by commas) makes `hit(name)` kill
the process with SIGKILL when execution reaches that place: no clean-up, no reply, exactly what a
crash or an OOM kill does. Unset (always, outside tests), `hit` is a set look-up and nothing else.
"""

from __future__ import annotations

import os
import signal

_ARMED = frozenset(name.strip() for name in os.environ.get("FAILPOINTS", "").split(",") if name.strip())


def hit(name: str) -> None:
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
