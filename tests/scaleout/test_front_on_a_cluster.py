"""The front joining an existing Ray cluster by address (`--workers ray:HOST:PORT`), as on a studio's cluster: a
head started with `ray start --head` in its own process, the front as a client of it. Jobs run on the cluster's
workers and land in the front's folder; the front is killed (-9) mid-job and restarted on the same base directory:
the queue is durable, the jobs that were waiting run on the new front's workers, the one that was running is
failed with the reason (as without workers), and the dead front's actor gave its CPU back to the cluster."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.scaleout.test_front_on_ray import slow_job, txt2img, wait_until, workers
from tests.server_harness import ServerProcess, free_port


def ray_cli():
    return os.path.join(os.path.dirname(sys.executable), "ray")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-CPU Ray head in its own session and temp folder (so no other Ray user on this machine finds it).
    `ray start` enables Ray's token authentication; its clients (the CLI, the front) then need RAY_AUTH_MODE=token,
    as a user of such a cluster sets it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_AUTH_MODE", "token")
        yield from _head(tmp_path_factory)


def _head(tmp_path_factory):
    temp = tmp_path_factory.mktemp("rayhead")
    port = free_port()
    log = open(temp / "head.log", "wb")
    head = subprocess.Popen([ray_cli(), "start", "--head", f"--port={port}", "--num-cpus=1", "--num-gpus=0",
                             "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
                             f"--object-store-memory={200 * 2 ** 20}", "--block"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: head.poll() is not None or subprocess.run(
            [ray_cli(), "status", f"--address={address}"], capture_output=True).returncode == 0, 120, "ray head")
        assert head.poll() is None, (temp / "head.log").read_text()
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(10)
        log.close()


def front_args(address):
    return ["--cpu", "--workers", f"ray:{address}", "--worker-count", "1"]


def test_a_front_joins_the_cluster_and_survives_its_own_restart(cluster, tmp_path, tiny_models):
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(tiny_models.checkpoint("sd1"), checkpoints / "a.safetensors")
    first = ServerProcess(tmp_path, front_args(cluster), packs=()).start()
    try:
        wait_until(lambda: len(workers(first)) == 1 and workers(first)[0]["ready"], 180, "the cluster's worker")
        status, body = first.post_prompt(txt2img("a.safetensors", "on a cluster", prefix="cluster"))
        assert status == 200, body
        entry = first.wait_history(body["prompt_id"], 120)
        assert entry["status"]["status_str"] == "success" and entry["worker"]["worker"] == "worker-0"
        image = entry["outputs"]["9"]["images"][0]
        assert (tmp_path / "output" / image["filename"]).is_file()  # landed in the front's folder

        # a long job runs, two wait behind it; the front dies
        running = first.post_prompt(slow_job("cut-short"))[1]["prompt_id"]
        waiting = [first.post_prompt(slow_job(f"waits-{i}"))[1]["prompt_id"] for i in range(2)]
        wait_until(lambda: first.json("GET", "/queue")[1]["queue_running"], 60, "the long job to start")
        first.kill9()
    finally:
        first.stop()

    second = ServerProcess(tmp_path, front_args(cluster), packs=()).start()
    try:
        # the head has one CPU: the new worker can only start once the dead front's actor is gone
        wait_until(lambda: len(workers(second)) == 1 and workers(second)[0]["ready"], 240, "the new worker")
        for prompt_id in waiting:
            assert second.wait_history(prompt_id, 180)["status"]["status_str"] == "success"
        cut = second.wait_history(running, 30)
        assert cut["status"]["status_str"] == "error"
        assert "ServerRestart" in str(cut["status"]["messages"])  # the reason: it was running when the front died
        assert second.json("GET", "/queue")[1] == {"queue_running": [], "queue_pending": []}
    finally:
        second.stop()


def test_a_refused_connection_names_token_authentication(monkeypatch):
    """Ray's ConnectionError names only the address; the front's log adds the usual cause and its fix."""
    from scaleout.pool import connection_hint
    refused = ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert "RAY_AUTH_MODE=token" in connection_hint(refused, "10.0.0.5:6379")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert "is the head's" in connection_hint(refused, "10.0.0.5:6379")
    assert connection_hint(refused, None) == ""  # a local instance: no cluster token involved
    assert connection_hint(RuntimeError("no GPUs"), "10.0.0.5:6379") == ""
