"""The durable queue and history on real SQLite files."""
import threading

import pytest

from execution.job_store import ERROR, SUCCESS, DuplicatePromptId, JobStore


def store_at(tmp_path, **kw):
    return JobStore(str(tmp_path / "jobs.db"), **kw)


def test_queue_order_numbers_and_front(tmp_path):
    store = store_at(tmp_path)
    a = store.enqueue("a", {"n": 1}, {}, ["1"])
    b = store.enqueue("b", {"n": 2}, {}, ["1"])
    c = store.enqueue("c", {"n": 3}, {}, ["1"], front=True)
    d = store.enqueue("d", {"n": 4}, {}, ["1"], number=0.5)
    assert a < b and c < 0 and d == 0.5
    _, pending = store.queue()
    assert [j.prompt_id for j in pending] == ["c", "d", "a", "b"]
    assert pending[1].item()[0] == 0.5 and pending[2].item() == [a, "a", {"n": 1}, {}, ["1"]]
    with pytest.raises(DuplicatePromptId):
        store.enqueue("a", {}, {}, [])
    assert store.claim_next(0).prompt_id == "c"
    running, pending = store.queue()
    assert [j.prompt_id for j in running] == ["c"] and store.pending_count() == 4


def test_claim_waits_for_new_work(tmp_path):
    store = store_at(tmp_path)
    assert store.claim_next(timeout=0.05) is None
    threading.Timer(0.1, lambda: store.enqueue("late", {}, {"client_id": "x"}, [])).start()
    job = store.claim_next(timeout=5)
    assert job.prompt_id == "late" and job.client_id == "x"


def test_history_order_paging_and_retention(tmp_path):
    store = store_at(tmp_path, max_history=3)
    for i in range(5):
        store.enqueue(f"j{i}", {}, {}, [])
        job = store.claim_next(0)
        store.finish(job.prompt_id, SUCCESS if i % 2 == 0 else ERROR, {"9": {"text": [str(i)]}}, [["x", {}]])
    history = store.history()
    assert list(history) == ["j2", "j3", "j4"]  # the oldest two fell out of retention
    assert history["j3"]["status"] == {"status_str": "error", "completed": False, "messages": [["x", {}]]}
    assert list(store.history(max_items=2)) == ["j3", "j4"]
    assert list(store.history(max_items=1, offset=1)) == ["j3"]
    store.delete_history(["j3"])
    assert store.history_entry("j3") is None and list(store.history()) == ["j2", "j4"]
    store.clear_history()
    assert store.history() == {}


def test_restart_fails_or_requeues_the_running_job(tmp_path):
    store = store_at(tmp_path)
    store.enqueue("running", {}, {}, [])
    store.enqueue("waiting", {}, {}, [])
    assert store.claim_next(0).prompt_id == "running"
    store.close()  # as if killed: the row still says running
    reopened = store_at(tmp_path)
    assert reopened.recovered == ["running"]
    entry = reopened.history_entry("running")
    assert entry["status"]["status_str"] == "error"
    assert "stopped while this job was running" in entry["status"]["messages"][0][1]["exception_message"]
    assert reopened.claim_next(0).prompt_id == "waiting"
    reopened.close()
    again = store_at(tmp_path, requeue_running=True)
    assert again.recovered == ["waiting"]
    assert again.claim_next(0).prompt_id == "waiting"
    assert again.next_number() > 2  # numbering continues after what is stored


def test_jobs_listing(tmp_path):
    store = store_at(tmp_path)
    for name in ("a", "b", "c"):
        store.enqueue(name, {}, {"client_id": "me"}, ["1"])
    store.claim_next(0)
    store.finish("a", SUCCESS, {"1": {"images": [{"filename": "x.png"}]}}, [])
    jobs, total = store.jobs(["completed"])
    assert total == 1 and jobs[0]["id"] == "a" and jobs[0]["outputs_count"] == 1
    jobs, total = store.jobs(["pending"], limit=1, offset=1, descending=False)
    assert total == 2 and [j["id"] for j in jobs] == ["c"]
    assert store.job("b")["status"] == "pending" and store.job("nope") is None
    assert store.delete_pending(["b"]) == 1 and store.clear_pending() == 1


def test_a_front_claims_any_pending_job_and_requeues_one_whose_worker_died(tmp_path):
    store = store_at(tmp_path)
    for name in "abc":
        store.enqueue(name, {"n": name}, {}, ["1"])
    assert [j.prompt_id for j in store.pending()] == ["a", "b", "c"]
    assert store.claim("b").prompt_id == "b" and store.claim("b") is None  # taken once only
    assert store.status_of("b") == "running" and [j.prompt_id for j in store.pending()] == ["a", "c"]
    attempts = {"attempts": [{"worker": "w0", "error": "ActorDiedError"}]}
    assert store.requeue("b", attempts) and not store.requeue("b")  # only a running job goes back
    assert [j.prompt_id for j in store.pending()] == ["a", "b", "c"]  # at its old place
    assert store.route_of("b") == attempts
    store.claim("b")
    store.finish("b", SUCCESS, {}, [], route={**attempts, "worker": "w1", "reason": "least loaded"})
    entry = store.history_entry("b")
    assert entry["worker"] == {"attempts": [{"worker": "w0", "error": "ActorDiedError"}], "worker": "w1",
                               "reason": "least loaded"}
    store.claim("a")
    store.finish("a", SUCCESS, {}, [])
    assert "worker" not in store.history_entry("a")  # the single-process server adds nothing


def test_a_database_from_before_scale_out_gains_the_route_column(tmp_path):
    import sqlite3
    path = str(tmp_path / "jobs.db")
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (prompt_id TEXT PRIMARY KEY, number REAL NOT NULL, status TEXT NOT NULL, "
                "prompt TEXT NOT NULL, extra_data TEXT NOT NULL, outputs_to_execute TEXT NOT NULL, client_id TEXT, "
                "created_at REAL NOT NULL, started_at REAL, finished_at REAL, finished_seq INTEGER, outputs TEXT, "
                "messages TEXT, meta TEXT)")
    old.execute("INSERT INTO jobs VALUES ('old', 1, 'success', '{}', '{}', '[]', NULL, 0, 0, 0, 1, '{}', '[]', "
                "'{}')")
    old.commit()
    old.close()
    store = JobStore(path)
    assert store.history_entry("old")["outputs"] == {} and "worker" not in store.history_entry("old")


def test_wait_for_change_never_misses_a_change_made_before_the_wait(tmp_path):
    store = store_at(tmp_path)
    seen = store.version
    store.enqueue("a", {}, {}, [])
    assert store.wait_for_change(seen, timeout=0.01)  # it came before the wait, and still counts
    assert not store.wait_for_change(store.version, timeout=0.05)
    waiter = threading.Timer(0.05, store.wake)
    waiter.start()
    assert store.wait_for_change(store.version, timeout=5)
    waiter.join()
