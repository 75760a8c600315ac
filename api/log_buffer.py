"""The server's recent log lines, for ComfyUI's frontend log panel (/internal/logs, and "logs" websocket messages to
clients that subscribed). A logging handler keeps the last `capacity` records as `{"t": ISO time, "m": text}`;
subscribers get each new entry pushed through the client hub (safe from any thread)."""
from __future__ import annotations

import collections
import datetime
import logging
import shutil
import threading
from typing import Any, Deque, Dict, List, Set


class LogBuffer(logging.Handler):
    def __init__(self, hub: Any = None, capacity: int = 300) -> None:
        super().__init__(level=logging.INFO)
        self.entries: Deque[Dict[str, str]] = collections.deque(maxlen=capacity)
        self.hub = hub
        self.subscribers: Set[str] = set()
        self._guard = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            entry = {"t": datetime.datetime.fromtimestamp(record.created).isoformat(),
                     "m": self.format(record) + "\n"}
        except Exception:  # noqa: BLE001 - a log line that cannot be formatted is dropped, never raised
            return
        with self._guard:
            self.entries.append(entry)
            subscribers = list(self.subscribers)
        if self.hub is not None:
            for sid in subscribers:
                self.hub.send_threadsafe("logs", {"entries": [entry], "size": terminal_size()}, sid)

    def lines(self) -> List[Dict[str, str]]:
        with self._guard:
            return list(self.entries)

    def subscribe(self, client_id: str, enabled: bool) -> None:
        with self._guard:
            (self.subscribers.add if enabled else self.subscribers.discard)(client_id)


def terminal_size() -> Dict[str, int]:
    size = shutil.get_terminal_size((80, 24))
    return {"cols": size.columns, "rows": size.lines}
