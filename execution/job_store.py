"""The durable queue and history: one SQLite database (WAL) in the user directory.

Every job is one row from the moment it is queued until history retention removes it. Its status moves
pending -> running -> success | error | interrupted. A restart (even after `kill -9`) finds pending jobs still
pending; a job that was running when the process died is marked failed with a clear reason, or put back in the
queue when the server is configured to requeue. All methods are thread-safe (the aiohttp loop and the worker
thread share one connection behind a lock).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from execution.job_summary import job_object

PENDING, RUNNING, SUCCESS, ERROR, INTERRUPTED = "pending", "running", "success", "error", "interrupted"
FINISHED = (SUCCESS, ERROR, INTERRUPTED)
# /api/jobs names for our statuses (ComfyUI's jobs contract: an interrupted job is "cancelled")
JOB_STATUS_NAMES = {PENDING: "pending", RUNNING: "in_progress", SUCCESS: "completed", ERROR: "failed",
                    INTERRUPTED: "cancelled"}
# the two fields of extra_data a job summary needs, read by SQLite (the list never parses whole workflows)
_SUMMARY_COLUMNS = ("prompt_id, number, status, created_at, started_at, finished_at, outputs, messages, "
                    "outputs_to_execute, client_id, json_extract(extra_data, '$.extra_pnginfo.workflow.id'), "
                    "json_extract(extra_data, '$.create_time')")
RESTART_REASON = "The server stopped while this job was running (it was restarted or killed)."

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    prompt_id TEXT PRIMARY KEY,
    number REAL NOT NULL,
    status TEXT NOT NULL,
    prompt TEXT NOT NULL,
    extra_data TEXT NOT NULL,
    outputs_to_execute TEXT NOT NULL,
    client_id TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    finished_seq INTEGER,
    outputs TEXT,
    messages TEXT,
    meta TEXT,
    route TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, number);
CREATE INDEX IF NOT EXISTS jobs_history ON jobs (finished_seq);
"""


@dataclass
class QueuedJob:
    number: float
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs_to_execute: list
    client_id: Optional[str]

    def item(self) -> list:
        """The wire form `[number, prompt_id, prompt, extra_data, outputs_to_execute]`."""
        number = int(self.number) if float(self.number).is_integer() else self.number
        return [number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


class DuplicatePromptId(ValueError):
    pass


class JobStore:
    def __init__(self, db_path: str, requeue_running: bool = False, max_history: int = 10000) -> None:
        self.db_path = db_path
        self.max_history = max_history
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._version = 0  # counts the notifications, so a waiter never misses one that came before it waited
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes (kill -9)
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "route" not in columns:  # a database from before scale-out
            self._db.execute("ALTER TABLE jobs ADD COLUMN route TEXT")
        self.recovered: List[str] = self._recover(requeue_running)
        top = self._db.execute("SELECT MAX(ABS(number)) FROM jobs").fetchone()[0] or 0
        self._number = int(top) + 1  # in memory: numbers only order the queue, the rows hold them durably
        row = self._db.execute("SELECT MAX(finished_seq) FROM jobs").fetchone()
        self._seq = (row[0] or 0) + 1
        self._history_count = self._count_history()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- recovery ---------------------------------------------------------------------------------------------
    def _recover(self, requeue: bool) -> List[str]:
        rows = self._db.execute("SELECT prompt_id FROM jobs WHERE status=?", (RUNNING,)).fetchall()
        ids = [r[0] for r in rows]
        if not ids:
            return []
        if requeue:
            self._db.execute("UPDATE jobs SET status=?, started_at=NULL WHERE status=?", (PENDING, RUNNING))
            return ids
        seq = (self._db.execute("SELECT MAX(finished_seq) FROM jobs").fetchone()[0] or 0) + 1
        now = time.time()
        for prompt_id in ids:
            message = ["execution_error", {"prompt_id": prompt_id, "node_id": None, "node_type": None,
                                           "exception_type": "ServerRestart", "exception_message": RESTART_REASON,
                                           "traceback": [], "executed": [], "current_inputs": {},
                                           "current_outputs": [], "timestamp": int(now * 1000)}]
            self._db.execute("UPDATE jobs SET status=?, finished_at=?, finished_seq=?, outputs=?, messages=? "
                             "WHERE prompt_id=?", (ERROR, now, seq, "{}", json.dumps([message]), prompt_id))
            seq += 1
        return ids

    # -- queueing -----------------------------------------------------------------------------------------------
    def _count_history(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM jobs WHERE finished_seq IS NOT NULL").fetchone()[0]

    def next_number(self, front: bool = False) -> int:
        with self._lock:
            value = self._number
            self._number += 1
            return -value if front else value

    def enqueue(self, prompt_id: str, prompt: dict, extra_data: dict, outputs: list,
                number: Optional[float] = None, front: bool = False) -> float:
        with self._lock:
            if number is None:
                number = self.next_number(front)
            try:
                self._db.execute(
                    "INSERT INTO jobs (prompt_id, number, status, prompt, extra_data, outputs_to_execute, "
                    "client_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (prompt_id, number, PENDING, json.dumps(prompt), json.dumps(extra_data), json.dumps(outputs),
                     extra_data.get("client_id"), time.time()))
            except sqlite3.IntegrityError:
                raise DuplicatePromptId(f"prompt_id {prompt_id!r} is already in use")
            self._notify()
            return number

    def claim_next(self, timeout: Optional[float] = None) -> Optional[QueuedJob]:
        """The first pending job by number, marked running; waits up to `timeout` seconds for one."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while True:
                row = self._db.execute(
                    "SELECT number, prompt_id, prompt, extra_data, outputs_to_execute, client_id FROM jobs "
                    "WHERE status=? ORDER BY number, created_at LIMIT 1", (PENDING,)).fetchone()
                if row is not None:
                    self._db.execute("UPDATE jobs SET status=?, started_at=? WHERE prompt_id=?",
                                     (RUNNING, time.time(), row[1]))
                    return QueuedJob(row[0], row[1], json.loads(row[2]), json.loads(row[3]), json.loads(row[4]),
                                     row[5])
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def pending(self) -> List[QueuedJob]:
        """The pending jobs in queue order (a scale-out front chooses among them)."""
        with self._lock:
            return self._items(PENDING)

    def claim(self, prompt_id: str) -> Optional[QueuedJob]:
        """That pending job, marked running; None if it is no longer pending (deleted, or taken)."""
        with self._lock:
            row = self._db.execute(
                "SELECT number, prompt_id, prompt, extra_data, outputs_to_execute, client_id FROM jobs "
                "WHERE status=? AND prompt_id=?", (PENDING, prompt_id)).fetchone()
            if row is None:
                return None
            self._db.execute("UPDATE jobs SET status=?, started_at=? WHERE prompt_id=?",
                             (RUNNING, time.time(), prompt_id))
            return QueuedJob(row[0], row[1], json.loads(row[2]), json.loads(row[3]), json.loads(row[4]), row[5])

    def requeue(self, prompt_id: str, route: Optional[dict] = None) -> bool:
        """Put a running job back in the queue at its old place (its worker died under it), keeping `route`
        (the attempts so far) for its history entry. False if it was not running."""
        with self._lock:
            changed = self._db.execute("UPDATE jobs SET status=?, started_at=NULL, route=? WHERE prompt_id=? AND "
                                       "status=?", (PENDING, json.dumps(route) if route is not None else None,
                                                    prompt_id, RUNNING)).rowcount
            self._notify()
            return bool(changed)

    def route_of(self, prompt_id: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute("SELECT route FROM jobs WHERE prompt_id=?", (prompt_id,)).fetchone()
            return json.loads(row[0]) if row and row[0] else None

    def wake(self) -> None:
        with self._lock:
            self._notify()

    def _notify(self) -> None:
        self._version += 1
        self._changed.notify_all()

    @property
    def version(self) -> int:
        return self._version

    def wait_for_change(self, since: int, timeout: float) -> bool:
        """Wait until something was queued, requeued or woken after `version` was `since`; False on timeout."""
        with self._lock:
            return self._changed.wait_for(lambda: self._version != since, timeout)

    def finish(self, prompt_id: str, status: str, outputs: dict, messages: list,
               meta: Optional[dict] = None, route: Optional[dict] = None) -> None:
        """Record a finished job; `route` (scale-out: the worker and why, the attempts) joins its history entry."""
        with self._lock:
            self._db.execute("UPDATE jobs SET status=?, finished_at=?, finished_seq=?, outputs=?, messages=?, "
                             "meta=?, route=COALESCE(?, route) WHERE prompt_id=?",
                             (status, time.time(), self._seq, json.dumps(outputs, default=repr),
                              json.dumps(messages, default=repr), json.dumps(meta or {}),
                              json.dumps(route) if route is not None else None, prompt_id))
            self._seq += 1
            self._history_count += 1
            self._enforce_retention()

    def _enforce_retention(self) -> None:
        if self._history_count > self.max_history:
            self._db.execute("DELETE FROM jobs WHERE prompt_id IN (SELECT prompt_id FROM jobs WHERE finished_seq "
                             "IS NOT NULL ORDER BY finished_seq LIMIT ?)", (self._history_count - self.max_history,))
            self._history_count = self._count_history()

    # -- the queue view ----------------------------------------------------------------------------------------
    def _items(self, status: str) -> List[QueuedJob]:
        rows = self._db.execute(
            "SELECT number, prompt_id, prompt, extra_data, outputs_to_execute, client_id FROM jobs WHERE status=? "
            "ORDER BY number, created_at", (status,)).fetchall()
        return [QueuedJob(r[0], r[1], json.loads(r[2]), json.loads(r[3]), json.loads(r[4]), r[5]) for r in rows]

    def queue(self) -> Tuple[List[QueuedJob], List[QueuedJob]]:
        with self._lock:
            return self._items(RUNNING), self._items(PENDING)

    def pending_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status IN (?, ?)",
                                    (PENDING, RUNNING)).fetchone()[0]

    def delete_pending(self, prompt_ids: List[str]) -> int:
        with self._lock:
            total = 0
            for prompt_id in prompt_ids:
                total += self._db.execute("DELETE FROM jobs WHERE prompt_id=? AND status=?",
                                          (str(prompt_id), PENDING)).rowcount
            return total

    def clear_pending(self) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM jobs WHERE status=?", (PENDING,)).rowcount

    def status_of(self, prompt_id: str) -> Optional[str]:
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE prompt_id=?", (prompt_id,)).fetchone()
            return row[0] if row else None

    # -- history ---------------------------------------------------------------------------------------------------
    _HISTORY_COLUMNS = ("number, prompt_id, prompt, extra_data, outputs_to_execute, status, outputs, messages, meta, "
                        "created_at, started_at, finished_at, client_id, route")

    def _history_entry(self, row: tuple) -> Tuple[str, dict]:
        number, prompt_id, prompt, extra, outs, status, outputs, messages, meta = row[:9]
        item = QueuedJob(number, prompt_id, json.loads(prompt), json.loads(extra), json.loads(outs), None).item()
        entry = {
            "prompt": item,
            "outputs": json.loads(outputs or "{}"),
            "status": {"status_str": "success" if status == SUCCESS else "error",
                       "completed": status == SUCCESS, "messages": json.loads(messages or "[]")},
            "meta": json.loads(meta or "{}"),
        }
        if row[13]:  # run by a scale-out worker: which one, why, and any earlier attempt
            entry["worker"] = json.loads(row[13])
        return prompt_id, entry

    def history(self, max_items: Optional[int] = None, offset: Optional[int] = None) -> Dict[str, dict]:
        """Finished jobs, oldest first. No offset with max_items: the newest `max_items`."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM jobs WHERE finished_seq IS NOT NULL").fetchone()[0]
            start = offset if offset is not None and offset >= 0 else (
                max(0, total - max_items) if max_items is not None else 0)
            limit = max_items if max_items is not None else -1
            rows = self._db.execute(
                f"SELECT {self._HISTORY_COLUMNS} FROM jobs WHERE finished_seq IS NOT NULL ORDER BY finished_seq "
                f"LIMIT ? OFFSET ?", (limit, start)).fetchall()
            return dict(self._history_entry(r) for r in rows)

    def history_entry(self, prompt_id: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute(f"SELECT {self._HISTORY_COLUMNS} FROM jobs WHERE prompt_id=? AND finished_seq "
                                   f"IS NOT NULL", (prompt_id,)).fetchone()
            return self._history_entry(row)[1] if row else None

    def delete_history(self, prompt_ids: List[str]) -> None:
        with self._lock:
            for prompt_id in prompt_ids:
                self._db.execute("DELETE FROM jobs WHERE prompt_id=? AND finished_seq IS NOT NULL", (str(prompt_id),))
            self._history_count = self._count_history()

    def clear_history(self) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE finished_seq IS NOT NULL")
            self._history_count = 0

    # -- the unified job list (/api/jobs) ----------------------------------------------------------------------------
    def jobs(self, statuses: Optional[List[str]] = None, limit: Optional[int] = None, offset: int = 0,
             sort_by: str = "created_at", descending: bool = True) -> Tuple[List[dict], int]:
        wanted = [s for s, name in JOB_STATUS_NAMES.items() if statuses is None or name in statuses]
        if not wanted:
            return [], 0
        duration = "COALESCE(finished_at - started_at, 0)"
        column = {"created_at": "created_at", "execution_time": duration, "execution_duration": duration,
                  "finished_at": "finished_at", "number": "number"}.get(sort_by, "created_at")
        order = "DESC" if descending else "ASC"
        marks = ",".join("?" * len(wanted))
        with self._lock:
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE status IN ({marks})", wanted).fetchone()[0]
            rows = self._db.execute(
                f"SELECT {_SUMMARY_COLUMNS} FROM jobs WHERE status IN ({marks}) ORDER BY {column} {order}, "
                f"number {order} LIMIT ? OFFSET ?", (*wanted, -1 if limit is None else limit, offset)).fetchall()
        return [self._job_summary(r) for r in rows], total

    def job(self, prompt_id: str) -> Optional[dict]:
        with self._lock:
            row = self._db.execute(f"SELECT {_SUMMARY_COLUMNS}, prompt, extra_data FROM jobs WHERE prompt_id=?",
                                   (prompt_id,)).fetchone()
        if row is None:
            return None
        summary = self._job_summary(row[:-2])
        prompt, extra_data, messages = json.loads(row[-2]), json.loads(row[-1]), json.loads(row[7] or "[]")
        summary.update(prompt=prompt, extra_data=extra_data, messages=messages,
                       workflow={"prompt": prompt, "extra_data": extra_data},
                       execution_errors=[m[1] for m in messages if m and m[0] == "execution_node_error"])
        if row[2] in FINISHED:
            summary["execution_status"] = {"status_str": "success" if row[2] == SUCCESS else "error",
                                           "completed": row[2] == SUCCESS, "messages": messages}
        return summary

    @staticmethod
    def _job_summary(row: tuple) -> dict:
        """The /api/jobs object (execution/job_summary.py) plus Tessera's own fields."""
        (prompt_id, number, status, created, started, finished, outputs, messages, outs, client_id, workflow_id,
         create_time) = row
        number = int(number) if float(number).is_integer() else number
        outputs_dict = json.loads(outputs or "{}")
        job = job_object(prompt_id=prompt_id, status=JOB_STATUS_NAMES.get(status, status), number=number,
                         created_ms=int(created * 1000), started_ms=int(started * 1000) if started else None,
                         finished_ms=int(finished * 1000) if finished else None, outputs=outputs_dict,
                         messages=json.loads(messages or "[]"), finished=status in FINISHED,
                         workflow_id=workflow_id if isinstance(workflow_id, str) else None,
                         create_time=int(create_time) if isinstance(create_time, (int, float)) else None)
        job.update(number=number, created_at=int(created * 1000), outputs=outputs_dict,
                   outputs_to_execute=json.loads(outs), client_id=client_id)
        return job
