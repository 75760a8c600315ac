"""The durable queue: kill -9 the server with jobs pending, restart, and every job still runs (docs/architecture.md §4.4)."""
import time

from tests.server_harness import ServerProcess, simple_prompt


def slow(steps=100000):
    return {"1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": 0.01, "previews": False}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def wait_running(server, prompt_id, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        _, queue = server.json("GET", "/queue")
        if [item[1] for item in queue["queue_running"]] == [prompt_id]:
            return
        time.sleep(0.05)
    raise TimeoutError("job never started")


def queue_and_kill(server):
    _, running = server.post_prompt(slow())
    wait_running(server, running["prompt_id"])
    pending = [server.post_prompt(simple_prompt(500 + i))[1]["prompt_id"] for i in range(5)]
    _, queue = server.json("GET", "/queue")
    assert len(queue["queue_pending"]) == 5
    server.kill9()
    return running["prompt_id"], pending


def test_kill_9_with_five_jobs_pending_then_restart_runs_all_five(tmp_path):
    server = ServerProcess(tmp_path).start()
    running_id, pending = queue_and_kill(server)
    server.start()
    try:
        for i, prompt_id in enumerate(pending):
            entry = server.wait_history(prompt_id)
            assert entry["status"]["completed"] and entry["outputs"] == {"2": {"text": [str(500 + i)]}}
        crashed = server.wait_history(running_id)
        assert crashed["status"]["status_str"] == "error" and not crashed["status"]["completed"]
        error = crashed["status"]["messages"][-1]
        assert error[0] == "execution_error" and "stopped while this job was running" in \
            error[1]["exception_message"]
        _, job = server.json("GET", f"/api/jobs/{running_id}")
        assert job["status"] == "failed"
    finally:
        server.stop()


def test_history_survives_a_restart_and_requeue_setting(tmp_path):
    server = ServerProcess(tmp_path, ["--requeue-running"]).start()
    _, done = server.post_prompt(simple_prompt(321))
    server.wait_history(done["prompt_id"])
    running_id, pending = queue_and_kill(server)
    server.start()
    try:
        _, entry = server.json("GET", f"/history/{done['prompt_id']}")
        assert entry[done["prompt_id"]]["outputs"] == {"2": {"text": ["321"]}}
        # with --requeue-running the interrupted job runs again instead of failing
        wait_running(server, running_id)
        server.json("POST", "/interrupt")
        for prompt_id in pending:
            assert server.wait_history(prompt_id)["status"]["completed"]
    finally:
        server.stop()
