"""The scale-out routing policy (scaleout/routing.py), on its own: what a job needs, and which job an idle worker
takes."""
from scaleout.routing import PendingJob, WorkerView, job_files, job_keys, pick_job
from nodes import builtin_catalogue

TXT2IMG = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd15/tiny.safetensors"}},
    "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "style.pt",
                                                 "strength_model": 1.0, "strength_clip": 1.0}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photo.png of a cat", "clip": ["10", 1]}},
}


def test_job_files_are_the_model_names_its_inputs_give():
    assert job_files(TXT2IMG) == {"sd15/tiny.safetensors", "style.pt"}
    assert job_files({"1": {"class_type": "X", "inputs": {"path": "sub\\a.SAFETENSORS", "n": 3}}}) == \
        {"sub/a.SAFETENSORS"}


def test_job_keys_follow_the_graph_not_the_node_ids():
    catalogue = builtin_catalogue()
    renamed = {str(int(k) + 100): {"class_type": v["class_type"],
                                   "inputs": {n: ([str(int(x[0]) + 100), x[1]] if isinstance(x, list) else x)
                                              for n, x in v["inputs"].items()}} for k, v in TXT2IMG.items()}
    assert job_keys(TXT2IMG, catalogue) == job_keys(renamed, catalogue)
    changed = {**TXT2IMG, "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a dog", "clip": ["10", 1]}}}
    shared = job_keys(TXT2IMG, catalogue) & job_keys(changed, catalogue)
    assert len(shared) == 2  # the loader and the LoRA; the encoder's text differs


def jobs(*files):
    return [PendingJob(f"j{i}", frozenset({f}) if f else frozenset()) for i, f in enumerate(files)]


def test_a_worker_takes_the_first_job_whose_models_it_holds():
    a = WorkerView("a", files=frozenset({"one.safetensors"}))
    b = WorkerView("b", busy=True, files=frozenset({"two.safetensors"}))
    route = pick_job(a, jobs("two.safetensors", "one.safetensors"), [a, b])
    assert (route.prompt_id, route.reason, route.detail["files"]) == ("j1", "holds models", ["one.safetensors"])


def test_a_job_nobody_holds_goes_to_the_idle_worker():
    a, b = WorkerView("a"), WorkerView("b", busy=True, files=frozenset({"two.safetensors"}))
    route = pick_job(a, jobs("two.safetensors", "three.safetensors"), [a, b])
    assert (route.prompt_id, route.reason) == ("j1", "least loaded")
    assert pick_job(a, jobs(None), [a, b]).reason == "least loaded"


def test_a_job_held_by_another_idle_worker_is_left_to_it():
    a, b = WorkerView("a"), WorkerView("b", files=frozenset({"two.safetensors"}))
    assert pick_job(a, jobs("two.safetensors"), [a, b]) is None
    assert pick_job(b, jobs("two.safetensors"), [a, b]).worker == "b"


def test_jobs_wait_for_their_busy_holder_until_the_queue_backs_up():
    a, b = WorkerView("a"), WorkerView("b", busy=True, files=frozenset({"two.safetensors"}))
    assert pick_job(a, jobs(*["two.safetensors"] * 3), [a, b], spread_after=3) is None
    route = pick_job(a, jobs(*["two.safetensors"] * 4), [a, b], spread_after=3)
    # the earliest of the waiting jobs moves, so the queue keeps its order
    assert (route.prompt_id, route.reason, route.detail) == ("j0", "spread", {"held_by": "b", "waiting": 3})
    assert pick_job(a, jobs("two.safetensors"), [a, b], spread_after=0).reason == "spread"


def test_cached_outputs_count_after_model_files():
    keys = frozenset({"k1", "k2"})
    a = WorkerView("a", files=frozenset({"m.safetensors"}))
    b = WorkerView("b", busy=True, files=frozenset({"m.safetensors"}), keys=keys)
    job = [PendingJob("j", frozenset({"m.safetensors"}), keys)]
    # b holds the model and the cached nodes, but a holds the model too: cached outputs alone are not worth a wait
    assert pick_job(a, job, [a, b]).reason == "holds models"
    assert pick_job(a, job, [a, WorkerView("b", files=b.files, keys=keys)]) is None  # an idle b takes it
    route = pick_job(b.__class__("b", files=b.files, keys=keys), job, [a, b])
    assert (route.reason, route.detail["cached_nodes"]) == ("holds models", 2)
    c = WorkerView("c", keys=keys)
    assert pick_job(c, [PendingJob("j", frozenset(), keys)], [c, a]).reason == "holds cached outputs"


def test_cached_outputs_alone_never_make_a_job_wait_for_a_busy_worker():
    job = PendingJob("j", frozenset({"b.safetensors"}), frozenset({"empty-latent"}))
    a = WorkerView("a", keys=frozenset())
    busy = WorkerView("b", busy=True, files=frozenset({"a.safetensors"}), keys=frozenset({"empty-latent"}))
    assert pick_job(a, [job], [a, busy]).reason == "least loaded"
    idle_holder = WorkerView("b", keys=frozenset({"empty-latent"}))
    assert pick_job(a, [job], [a, idle_holder]) is None  # an idle worker with the cached outputs takes it


def client_jobs(*pairs):
    return [PendingJob(f"j{i}", frozenset({f}) if f else frozenset(), client=c) for i, (c, f) in enumerate(pairs)]


def test_keeping_client_order_a_job_does_not_start_before_an_earlier_one_of_its_client():
    a, b = WorkerView("a"), WorkerView("b", busy=True, files=frozenset({"two.safetensors"}))
    queue = client_jobs(("alice", "two.safetensors"), ("alice", None), ("bob", None))
    # without the rule a's job is the free one behind alice's waiting job
    assert pick_job(a, queue, [a, b]).prompt_id == "j1"
    # with it alice's second job waits behind her first; bob's job is the one a can start
    route = pick_job(a, queue, [a, b], keep_client_order=True)
    assert (route.prompt_id, route.reason) == ("j2", "least loaded")
    assert pick_job(a, queue[:2], [a, b], keep_client_order=True) is None
    # a job of her own that a holds also waits behind her earlier one
    mine = WorkerView("a", files=frozenset({"one.safetensors"}))
    held = client_jobs(("alice", "two.safetensors"), ("alice", "one.safetensors"))
    assert pick_job(mine, held, [mine, b]).prompt_id == "j1"
    assert pick_job(mine, held, [mine, b], keep_client_order=True) is None


def test_keeping_client_order_still_spreads_a_long_queue_from_its_head():
    a, b = WorkerView("a"), WorkerView("b", busy=True, files=frozenset({"two.safetensors"}))
    queue = client_jobs(*[("alice", "two.safetensors")] * 4)
    route = pick_job(a, queue, [a, b], spread_after=3, keep_client_order=True)
    assert (route.prompt_id, route.reason) == ("j0", "spread")
    assert pick_job(a, queue[:3], [a, b], spread_after=3, keep_client_order=True) is None
