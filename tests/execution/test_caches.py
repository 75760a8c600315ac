"""Every cache policy, through real jobs: classic, LRU(N jobs), RAM pressure (headroom), none."""
import torch

from execution.caches import (CachedOutput, ClassicCache, LRUCache, NoCache, RamPressureCache, estimate_size,
                              make_cache)
from tests.conftest import Engine


def workflow(value):
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
            "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 1, "operation": "add"}},
            "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def ran(engine, prompt):
    return sorted(engine.run(prompt)[0].executed)


def test_classic_keeps_only_what_the_latest_job_used():
    engine = Engine(ClassicCache())
    assert ran(engine, workflow(1)) == ["1", "2", "3"]
    assert ran(engine, workflow(1)) == []
    assert ran(engine, workflow(2)) == ["1", "2", "3"]
    assert ran(engine, workflow(1)) == ["1", "2", "3"]  # job 1's results were dropped by job 2


def test_lru_keeps_the_last_n_jobs():
    engine = Engine(LRUCache(2))
    ran(engine, workflow(1))
    ran(engine, workflow(2))
    assert ran(engine, workflow(1)) == []  # within the last 2 jobs
    assert ran(engine, workflow(2)) == []
    ran(engine, workflow(3))
    ran(engine, workflow(4))
    assert ran(engine, workflow(1)) == ["1", "2", "3"]  # fell out after two other jobs


def test_lru_shared_nodes_stay_alive_while_used():
    engine = Engine(LRUCache(1))
    ran(engine, workflow(1))
    # changing only the last node keeps the shared upstream cached
    changed = workflow(1)
    changed["2"]["inputs"]["b"] = 5
    assert ran(engine, changed) == ["2", "3"]


class FakeMemory:
    """Available RAM as the cache sees it: a boundary we control instead of the machine's real memory."""

    def __init__(self, available):
        self.available = available

    def __call__(self):
        return self.available


def test_ram_pressure_keeps_everything_with_headroom_and_evicts_under_pressure():
    memory = FakeMemory(available=16 << 30)
    cache = RamPressureCache(headroom_gb=4, available_ram=memory)
    engine = Engine(cache)
    ran(engine, workflow(1))
    ran(engine, workflow(2))
    assert ran(engine, workflow(1)) == []  # plenty of RAM: nothing evicted, unlike classic
    memory.available = 1 << 30  # 3 GB short of the headroom
    ran(engine, workflow(3))
    assert len(cache) == 0 or all(e.size >= 0 for e in cache.entries.values())
    assert ran(engine, workflow(1)) == ["1", "2", "3"]


def test_ram_pressure_evicts_oldest_largest_first():
    memory = FakeMemory(available=8 << 30)
    cache = RamPressureCache(headroom_gb=1, available_ram=memory)
    cache.begin_job()
    cache.put("old_big", CachedOutput([[torch.zeros(1 << 20)]]))       # 4 MiB, used in job 1
    cache.put("old_small", CachedOutput([[torch.zeros(16)]]))
    cache.begin_job()
    cache.put("new_big", CachedOutput([[torch.zeros(1 << 20)]]))       # 4 MiB, used in job 2
    memory.available = (1 << 30) - (1 << 20)  # 1 MiB short: one big eviction is enough
    cache.end_job([])
    assert "old_big" not in cache and "new_big" in cache and "old_small" in cache


def test_none_keeps_nothing_between_jobs_but_shares_within_a_job():
    engine = Engine(NoCache())
    assert ran(engine, workflow(1)) == ["1", "2", "3"]
    assert ran(engine, workflow(1)) == ["1", "2", "3"]
    twin = workflow(1)
    twin["4"] = {"class_type": "PrimitiveInt", "inputs": {"value": 1}}
    twin["5"] = {"class_type": "PreviewAny", "inputs": {"source": ["4", 0]}}
    outcome, sink = engine.run(twin)
    executing = [d["node"] for d in sink.of("executing")]
    assert len([n for n in executing if n in ("1", "4")]) == 1


def test_make_cache_and_size_estimates():
    assert make_cache("classic").policy == "classic"
    assert make_cache("lru", lru_size=3).max_jobs == 3
    assert make_cache("ram", ram_headroom_gb=2, available_ram=lambda: 1 << 40).headroom == 2 << 30
    assert make_cache("none").policy == "none"
    try:
        make_cache("bogus")
    except ValueError as exc:
        assert "bogus" in str(exc)
    else:
        raise AssertionError("unknown policy accepted")
    assert estimate_size([torch.zeros(10, dtype=torch.float32)]) >= 40
    assert estimate_size({"samples": torch.zeros(2, 4, 8, 8)}) >= 2 * 4 * 8 * 8 * 4
