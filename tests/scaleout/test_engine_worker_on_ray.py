"""The scale-out worker actor (scaleout/actor.py) on a real local Ray instance: it builds its own engine from the
front's command line, streams a job's events in order with the bytes of the files it saved, reports what it holds,
takes an interrupt while a job runs, and comes back after its process is killed."""
import os
import signal
import time

import pytest
import ray


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2 ** 20, log_to_driver=False,
             job_config=ray.job_config.JobConfig(code_search_path=[ROOT]))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def worker(local_ray, tmp_path_factory):
    import server
    from scaleout.actor import EngineWorker
    base = tmp_path_factory.mktemp("front")
    args = server.parse_args(["--cpu", "--base-directory", str(base), "--disable-all-custom-nodes"])
    staging = str(tmp_path_factory.mktemp("staging"))
    actor = ray.remote(EngineWorker).options(num_cpus=1, max_restarts=-1, max_task_retries=0,
                                             max_concurrency=4).remote(args, "w0", staging)
    return actor, staging


def image_job(width, batch=1):
    return {"1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": 8, "batch_size": batch,
                                                        "color": 255}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "ray"}}}


def run(actor, prompt_id, prompt):
    items = []
    for ref in actor.run.options(num_returns="streaming").remote(prompt_id, prompt, {"client_id": "c"}, ["2"]):
        items.append(ray.get(ref))
    return items


def test_a_job_streams_its_events_and_saved_files(worker):
    actor, staging = worker
    assert ray.get(actor.ping.remote())["nodes"] > 100
    items = run(actor, "p1", image_job(16))
    events = [item[1] for item in items if item[0] == "event"]
    assert events[0] == "execution_start" and events[-1] == "execution_success" and "executed" in events
    executed = next(item for item in items if item[0] == "event" and item[1] == "executed")
    (key, png), = executed[3].items()
    assert key[0] == "output" and key[2].startswith("ray_") and png[:8] == b"\x89PNG\r\n\x1a\n"
    status, outputs, messages, meta, state = items[-1][1:]
    assert items[-1][0] == "outcome" and status == "success" and outputs["2"]["images"][0]["filename"] == key[2]
    assert len(state["keys"]) == 2  # the two nodes' outputs are cached there now
    assert not os.listdir(os.path.join(staging, "output"))  # shipped, so the staging folder is empty again


def test_a_bad_job_fails_with_a_node_error_and_the_worker_lives_on(worker):
    actor, _ = worker
    items = run(actor, "bad", {"1": {"class_type": "EmptyImage", "inputs": {"width": "wide"}}})
    assert items[-1][1] == "error" and any(item[1] == "execution_error" for item in items if item[0] == "event")
    assert run(actor, "p2", image_job(24))[-1][1] == "success"


def test_interrupt_reaches_the_running_job(worker):
    actor, _ = worker
    stream = actor.run.options(num_returns="streaming").remote("big", image_job(4096, 64), {}, ["2"])
    first = ray.get(next(stream))
    assert first[1] == "execution_start"
    assert not ray.get(actor.interrupt.remote("someone-else"))
    deadline = time.monotonic() + 20
    while not ray.get(actor.interrupt.remote("big")) and time.monotonic() < deadline:
        time.sleep(0.05)
    items = [ray.get(ref) for ref in stream]
    assert items[-1][0] == "outcome" and items[-1][1] == "interrupted"


def test_a_killed_worker_is_detected_and_restarted(worker):
    actor, _ = worker
    pid = ray.get(actor.ping.remote())["pid"]
    stream = actor.run.options(num_returns="streaming").remote("doomed", image_job(4096, 64), {}, ["2"])
    ray.get(next(stream))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises((ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
        for ref in stream:
            ray.get(ref)
    deadline = time.monotonic() + 120
    while True:
        try:
            info = ray.get(actor.ping.remote(), timeout=30)
            break
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ray.exceptions.GetTimeoutError):
            assert time.monotonic() < deadline
            time.sleep(0.5)
    assert info["pid"] != pid
    assert run(actor, "after", image_job(8))[-1][1] == "success"


def test_with_a_shared_output_folder_a_job_ships_paths_and_the_front_moves_the_files(local_ray, tmp_path):
    import server
    from scaleout.actor import EngineWorker
    from scaleout.landing import OutputLanding
    args = server.parse_args(["--cpu", "--base-directory", str(tmp_path / "front"), "--disable-all-custom-nodes"])
    staging = tmp_path / "workers"
    actor = ray.remote(EngineWorker).options(num_cpus=1, max_concurrency=4).remote(
        args, "w1", str(staging / "w1"), True)
    items = run(actor, "shared", image_job(16, batch=2))
    executed = next(item for item in items if item[0] == "event" and item[1] == "executed")
    files = executed[3]
    assert len(files) == 2 and all(isinstance(path, str) and os.path.isfile(path) for path in files.values())
    # the worker left its staged files for the front (no bytes crossed Ray); the front moves them into place
    out = tmp_path / "front" / "output"
    out.mkdir(parents=True)
    (out / "ray_00001_.png").write_bytes(b"taken")
    renames = OutputLanding({"output": str(out), "temp": str(tmp_path / "front" / "temp")},
                            str(staging)).land(files)
    assert sorted(os.listdir(out)) == ["ray_00001_.png", "ray_00002_.png", "ray_00003_.png"]
    assert renames == {("output", "", "ray_00001_.png"): "ray_00002_.png",
                       ("output", "", "ray_00002_.png"): "ray_00003_.png"}
    assert (out / "ray_00003_.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not os.listdir(staging / "w1" / "output")
    ray.kill(actor)
