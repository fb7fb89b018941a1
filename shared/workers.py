"""Background work of a service process that runs on a timer (the checkout recovery worker): once
at start-up, then every interval, until the process stops. A failed run is logged and the next
one tries again; the work itself must be safe to repeat."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicWorker:
    def __init__(self, name: str, interval_seconds: int, work: Callable[[], object]) -> None:
        self.name = name
        self._interval = interval_seconds
        self._work = work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._work()
            except Exception:
                log.exception("%s run failed; trying again in %s s", self.name, self._interval)
            self._stop.wait(self._interval)

    def stop(self, timeout_seconds: int = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_seconds)
