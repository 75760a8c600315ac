"""The wire contract end to end: a real server process, real HTTP and websocket clients (docs/architecture.md §4.1)."""
import asyncio
import json
import struct
import time
import uuid

import aiohttp
import pytest

from tests.server_harness import ServerProcess, collect_until_done, simple_prompt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("srv"), packs=("server_pack", "broken_server_pack.py")).start()
    yield srv
    srv.stop()


def slow_prompt(steps=5, delay=0.02, previews=False):
    return {"1": {"class_type": "SlowCount", "inputs": {"steps": steps, "delay": delay, "previews": previews}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


def run(coro):
    return asyncio.run(coro)


def test_a_jobs_full_message_sequence(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=alice") as ws:
                first = json.loads((await ws.receive()).data)
                assert first["type"] == "status" and first["data"]["sid"] == "alice"
                assert "queue_remaining" in first["data"]["status"]["exec_info"]
                async with session.post(f"{server.url}/prompt", json={"prompt": slow_prompt(3),
                                                                      "client_id": "alice"}) as r:
                    body = await r.json()
                    assert r.status == 200 and body["node_errors"] == {} and isinstance(body["number"], int)
                messages, _ = await collect_until_done(ws, body["prompt_id"])
                # history is written before `executing {node: null}` is sent
                async with session.get(f"{server.url}/history/{body['prompt_id']}") as r:
                    history = await r.json()
                return body["prompt_id"], messages, history

    prompt_id, messages, history = run(scenario())
    kinds = [m["type"] for m in messages if m["type"] != "status"]
    assert kinds[0] == "execution_start" and kinds[1] == "execution_cached"
    assert kinds[-2:] == ["execution_success", "executing"]
    assert [m["data"]["node"] for m in messages if m["type"] == "executing"] == ["1", "2", None]
    progress = [m["data"] for m in messages if m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 3, "1"), (2, 3, "1"), (3, 3, "1")]
    assert "progress_state" in kinds
    executed = [m["data"] for m in messages if m["type"] == "executed"]
    assert executed == [{"node": "2", "display_node": "2", "output": {"text": ["3"]}, "prompt_id": prompt_id}]
    assert all(m["data"]["prompt_id"] == prompt_id for m in messages if m["type"] != "status")
    entry = history[prompt_id]
    assert entry["outputs"] == {"2": {"text": ["3"]}}
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                           "execution_success"]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][4] == ["2"]


def test_cached_output_nodes_still_get_executed(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=cache-client") as ws:
                await ws.receive()
                results = []
                for _ in range(2):
                    async with session.post(f"{server.url}/prompt", json={"prompt": simple_prompt(77),
                                                                          "client_id": "cache-client"}) as r:
                        prompt_id = (await r.json())["prompt_id"]
                    results.append(await collect_until_done(ws, prompt_id))
                return results

    (first, _), (second, _) = run(scenario())
    cached = [m["data"] for m in second if m["type"] == "execution_cached"][0]
    assert sorted(cached["nodes"]) == ["1", "2"]
    assert [m["data"]["node"] for m in second if m["type"] == "executing"] == [None]
    assert [m["data"]["output"] for m in second if m["type"] == "executed"] == [{"text": ["77"]}]


def test_two_clients_each_get_only_their_own_events(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=one") as ws1, \
                    session.ws_connect(f"{server.url}/ws?clientId=two") as ws2:
                await ws1.receive()
                await ws2.receive()
                async with session.post(f"{server.url}/prompt", json={"prompt": simple_prompt(101),
                                                                      "client_id": "one"}) as r:
                    id1 = (await r.json())["prompt_id"]
                async with session.post(f"{server.url}/prompt", json={"prompt": simple_prompt(202),
                                                                      "client_id": "two"}) as r:
                    id2 = (await r.json())["prompt_id"]
                m1, _ = await collect_until_done(ws1, id1)
                m2, _ = await collect_until_done(ws2, id2)
                return id1, id2, m1, m2

    id1, id2, m1, m2 = run(scenario())
    ids1 = {m["data"].get("prompt_id") for m in m1 if m["type"] != "status"}
    ids2 = {m["data"].get("prompt_id") for m in m2 if m["type"] != "status"}
    assert ids1 == {id1} and ids2 == {id2}


def test_bad_prompt_gets_a_400_with_node_errors(server):
    prompt = simple_prompt()
    prompt["1"]["inputs"]["value"] = "not a number"
    status, body = server.post_prompt(prompt)
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "invalid_input_type"
    assert body["node_errors"]["1"]["errors"][0]["extra_info"]["input_name"] == "value"
    assert body["node_errors"]["1"]["class_type"] == "PrimitiveInt"
    status, body = server.post_prompt({"1": {"class_type": "Nope", "inputs": {}}})
    assert status == 400 and body["error"]["type"] == "invalid_prompt" and body["node_errors"] == {}
    status, body = server.json("POST", "/prompt", {"no_prompt": 1})
    assert status == 400 and body["error"]["type"] == "invalid_prompt"


def test_interrupting_a_running_job(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=stopper") as ws:
                await ws.receive()
                async with session.post(f"{server.url}/prompt", json={"prompt": slow_prompt(2000, 0.01),
                                                                      "client_id": "stopper"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                while True:  # wait until it is really running
                    data = json.loads((await ws.receive()).data)
                    if data["type"] == "progress":
                        break
                async with session.post(f"{server.url}/interrupt", json={"prompt_id": "someone-else"}) as r:
                    assert r.status == 200
                await asyncio.sleep(0.2)
                async with session.get(f"{server.url}/queue") as r:
                    assert [item[1] for item in (await r.json())["queue_running"]] == [prompt_id]
                async with session.post(f"{server.url}/interrupt", json={"prompt_id": prompt_id}) as r:
                    assert r.status == 200
                messages, _ = await collect_until_done(ws, prompt_id, timeout=15)
                return prompt_id, messages

    started = time.time()
    prompt_id, messages = run(scenario())
    assert time.time() - started < 15
    interrupted = [m["data"] for m in messages if m["type"] == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_id"] == "1" and interrupted[0]["node_type"] == "SlowCount"
    entry = server.wait_history(prompt_id)
    assert entry["status"]["status_str"] == "error" and entry["status"]["completed"] is False
    # the server goes on with the next job
    status, body = server.post_prompt(simple_prompt(3))
    assert server.wait_history(body["prompt_id"])["status"]["completed"]


def test_interrupt_without_prompt_id_stops_the_current_job(server):
    status, body = server.post_prompt(slow_prompt(2000, 0.01))
    deadline = time.time() + 10
    while time.time() < deadline:
        _, queue = server.json("GET", "/queue")
        if queue["queue_running"]:
            break
        time.sleep(0.05)
    server.json("POST", "/interrupt")
    entry = server.wait_history(body["prompt_id"], timeout=15)
    assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_interrupted"


def test_previews_as_binary_frames_type_1_and_type_4(server):
    async def scenario(announce, steps):
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=pv-{announce}") as ws:
                await ws.receive()
                if announce:
                    await ws.send_str(json.dumps({"type": "feature_flags",
                                                  "data": {"supports_preview_metadata": True}}))
                    flags = json.loads((await ws.receive()).data)
                    assert flags["type"] == "feature_flags" and flags["data"]["supports_preview_metadata"]
                async with session.post(f"{server.url}/prompt", json={"prompt": slow_prompt(steps, 0.0, True),
                                                                      "client_id": f"pv-{announce}"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                _, binary = await collect_until_done(ws, prompt_id)
                return prompt_id, binary

    _, frames = run(scenario(False, 3))
    assert len(frames) == 3
    kind, fmt = struct.unpack(">II", frames[0][:8])
    assert kind == 1 and fmt == 1 and frames[0][8:10] == b"\xff\xd8"  # a JPEG
    prompt_id, frames = run(scenario(True, 4))  # a different job: not cached
    assert len(frames) == 4
    kind, length = struct.unpack(">II", frames[0][:8])
    meta = json.loads(frames[0][8:8 + length])
    assert kind == 4 and meta["node_id"] == "1" and meta["prompt_id"] == prompt_id
    assert frames[0][8 + length:8 + length + 2] == b"\xff\xd8"


def test_client_supplied_prompt_id_number_and_front(server):
    server.json("POST", "/queue", {"clear": True})
    blocker_id = f"block-{uuid.uuid4()}"
    status, body = server.post_prompt(slow_prompt(2000, 0.01), prompt_id=blocker_id)
    assert status == 200 and body["prompt_id"] == blocker_id
    status, dup = server.post_prompt(simple_prompt(), prompt_id=blocker_id)
    assert status == 409 and dup["error"]["type"] == "invalid_prompt"
    _, a = server.post_prompt(simple_prompt(1001))
    _, b = server.post_prompt(simple_prompt(1002), number=-1000)
    _, c = server.post_prompt(simple_prompt(1003), front=True)
    _, queue = server.json("GET", "/queue")
    pending = [item[1] for item in queue["queue_pending"]]
    assert pending.index(b["prompt_id"]) < pending.index(a["prompt_id"])
    assert pending.index(c["prompt_id"]) < pending.index(a["prompt_id"])
    item = queue["queue_pending"][0]
    assert len(item) == 5 and isinstance(item[2], dict) and isinstance(item[4], list)
    # delete one pending job, then clear the rest
    server.json("POST", "/queue", {"delete": [a["prompt_id"]]})
    _, queue = server.json("GET", "/queue")
    assert a["prompt_id"] not in [i[1] for i in queue["queue_pending"]]
    _, info = server.json("GET", "/prompt")
    assert info["exec_info"]["queue_remaining"] == len(queue["queue_pending"]) + len(queue["queue_running"])
    server.json("POST", "/queue", {"clear": True})
    _, queue = server.json("GET", "/queue")
    assert queue["queue_pending"] == []
    server.json("POST", "/interrupt", {"prompt_id": blocker_id})
    server.wait_history(blocker_id)


def test_history_paging_and_delete(server):
    ids = []
    for value in range(900, 905):
        _, body = server.post_prompt(simple_prompt(value))
        ids.append(body["prompt_id"])
    for prompt_id in ids:
        server.wait_history(prompt_id)
    _, newest = server.json("GET", "/history?max_items=2")
    assert list(newest) == ids[-2:]
    _, everything = server.json("GET", "/history")
    order = list(everything)
    assert order[-5:] == ids
    start = order.index(ids[1])
    _, page = server.json("GET", f"/history?max_items=2&offset={start}")
    assert list(page) == ids[1:3]
    server.json("POST", "/history", {"delete": [ids[0]]})
    _, gone = server.json("GET", f"/history/{ids[0]}")
    assert gone == {}
    status, body = server.json("GET", "/history?max_items=abc")
    assert status == 400


def test_jobs_api_filters_sorts_and_pages(server):
    _, ok = server.post_prompt(simple_prompt(4242))
    server.wait_history(ok["prompt_id"])
    status, jobs = server.json("GET", "/api/jobs?status=completed&limit=3&sort_order=desc")
    assert status == 200 and len(jobs["jobs"]) <= 3
    assert all(j["status"] == "completed" for j in jobs["jobs"])
    assert jobs["pagination"]["limit"] == 3 and jobs["pagination"]["total"] >= len(jobs["jobs"])
    assert jobs["pagination"]["has_more"] == (jobs["pagination"]["total"] > len(jobs["jobs"]))
    created = [j["created_at"] for j in jobs["jobs"]]
    assert created == sorted(created, reverse=True)
    status, asc = server.json("GET", "/api/jobs?status=completed,failed&sort_order=asc&offset=1&limit=2")
    assert status == 200 and asc["pagination"]["offset"] == 1
    status, one = server.json("GET", f"/api/jobs/{ok['prompt_id']}")
    assert status == 200 and one["id"] == ok["prompt_id"] and one["status"] == "completed"
    assert one["outputs"] == {"2": {"text": ["4242"]}}
    status, missing = server.json("GET", "/api/jobs/does-not-exist")
    assert status == 404 and missing["error"]["type"] == "not_found"
    assert server.json("GET", "/api/jobs?status=bogus")[0] == 400
    assert server.json("GET", "/jobs?status=pending")[0] == 200


def test_routes_are_served_bare_and_under_api(server):
    for path in ("/object_info", "/system_stats", "/queue", "/history", "/prompt", "/features", "/embeddings",
                 "/models", "/extensions"):
        assert server.request("GET", path)[0] == 200, path
        assert server.request("GET", "/api" + path)[0] == 200, path


def test_system_stats_lists_the_broken_pack_and_the_server_keeps_working(server):
    status, stats = server.json("GET", "/system_stats")
    assert status == 200 and stats["devices"] and stats["system"]["python_version"]
    failed = {p["name"]: p for p in stats["custom_nodes"]["failed"]}
    assert "broken_server_pack" in failed and "not installed" in failed["broken_server_pack"]["error"]
    assert "server_pack" in stats["custom_nodes"]["loaded"]
    _, info = server.json("GET", "/object_info/SlowCount")
    assert info["SlowCount"]["display_name"] == "Slow Count"
    assert info["SlowCount"]["python_module"] == "custom_nodes.server_pack"
    _, extensions = server.json("GET", "/extensions")
    assert extensions == ["/extensions/server_pack/ext.js"]
    status, js, _ = server.request("GET", "/extensions/server_pack/ext.js")
    assert status == 200 and b"server_pack loaded" in js
    assert server.json("GET", "/server_pack/hello") == (200, {"hello": "from a pack"})


def test_object_info_is_fresh_without_a_restart(server):
    import os
    from PIL import Image
    _, before = server.json("GET", "/object_info/LoadImage")
    choices = before["LoadImage"]["input"]["required"]["image"][0]
    name = f"fresh-{uuid.uuid4().hex[:6]}.png"
    Image.new("RGB", (4, 4)).save(os.path.join(server.base_dir, "input", name))
    _, after = server.json("GET", "/object_info/LoadImage")
    assert name in after["LoadImage"]["input"]["required"]["image"][0] and name not in choices


def test_free_and_models_routes(server):
    assert server.json("POST", "/free", {"unload_models": True, "free_memory": True}) == (200, {})
    status, kinds = server.json("GET", "/models")
    assert "checkpoints" in kinds and "loras" in kinds
    assert server.json("GET", "/models/checkpoints") == (200, [])
    assert server.json("GET", "/models/not_a_kind")[0] == 404


def test_pack_hooks_send_sync_and_on_prompt_handlers(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=pinger") as ws:
                await ws.receive()
                prompt = {"1": {"class_type": "Ping", "inputs": {"text": "pong"}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
                          "3": {"class_type": "PrimitiveInt", "inputs": {"value": 12345}},
                          "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}}}
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt,
                                                                      "client_id": "pinger"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                messages, _ = await collect_until_done(ws, prompt_id)
                return messages

    messages = run(scenario())
    assert {"type": "server_pack.ping", "data": {"text": "pong"}} in messages
    executed = {m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed"}
    assert executed["4"] == {"text": ["54321"]}  # rewritten by the pack's on-prompt handler


def test_failed_job_still_ends_with_executing_null_after_history(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=failer") as ws:
                await ws.receive()
                prompt = {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "operation": "divide"}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt,
                                                                      "client_id": "failer"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                messages, _ = await collect_until_done(ws, prompt_id)
                async with session.get(f"{server.url}/history/{prompt_id}") as r:
                    return messages, (await r.json())[prompt_id]

    messages, entry = run(scenario())
    error = [m["data"] for m in messages if m["type"] == "execution_error"][0]
    assert error["node_id"] == "1" and error["node_type"] == "IntMath" and error["traceback"]
    assert error["exception_type"] == "ZeroDivisionError"
    assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_error"
    assert not any(line for line in error["traceback"] if "/work/" in line or "/root/" in line or "/tmp/" in line)
    assert any('File "execution/' in line or 'File "nodes/' in line for line in error["traceback"])


def test_history_is_readable_the_moment_a_final_event_arrives(server):
    """The history entry is written before execution_error/execution_success go out: a client that asks right
    then always finds it (7 tries each way)."""
    async def scenario(prompt):
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=racer") as ws:
                await ws.receive()
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt,
                                                                      "client_id": "racer"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                while True:
                    msg = await asyncio.wait_for(ws.receive(), 30)
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    data = json.loads(msg.data)
                    if data["type"] in ("execution_error", "execution_success"):
                        async with session.get(f"{server.url}/history/{prompt_id}") as r:
                            return data["type"], await r.json()

    failing = {"1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 0, "operation": "divide"}},
               "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    for attempt in range(7):
        working = {"1": {"class_type": "IntMath", "inputs": {"a": attempt, "b": 1, "operation": "add"}},
                   "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        for prompt, expected in ((failing, "execution_error"), (working, "execution_success")):
            kind, history = run(scenario(prompt))
            assert kind == expected and len(history) == 1, (attempt, kind, history)


def test_the_console_logs_each_job_like_comfyui(server):
    """Queued, started, done in N s -- or failed at which node with which message."""
    import re
    _, ok = server.post_prompt({"1": {"class_type": "PrimitiveInt", "inputs": {"value": 77}},
                                "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    server.wait_history(ok["prompt_id"])
    _, bad = server.post_prompt({"1": {"class_type": "IntMath", "inputs": {"a": 3, "b": 0, "operation": "divide"}},
                                 "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}})
    server.wait_history(bad["prompt_id"])
    log = server.read_log()
    good, failed = ok["prompt_id"], bad["prompt_id"]
    assert re.search(rf"job {good} queued \(number \S+, 2 nodes\)", log)
    assert f"job {good} started" in log and re.search(rf"job {good} done in \d+\.\d\d s", log)
    assert re.search(rf"job {failed} failed at node 1 \(IntMath\) after \d+\.\d\d s: .*division by zero", log)


def test_jobs_contract_for_running_pending_finished_failed_and_cancelled(server):
    """The fields and statuses ComfyUI's frontend validates in its Job Queue panel."""
    running_id = server.post_prompt(slow_prompt(2000, 0.01))[1]["prompt_id"]
    pending_id = server.post_prompt(slow_prompt(3, 0.0))[1]["prompt_id"]
    deadline = time.time() + 10
    while time.time() < deadline and not server.json("GET", "/queue")[1]["queue_running"]:
        time.sleep(0.05)
    _, live = server.json("GET", "/api/jobs?status=in_progress,pending")
    by_id = {j["id"]: j for j in live["jobs"]}
    for job_id, status in ((running_id, "in_progress"), (pending_id, "pending")):
        job = by_id[job_id]
        assert job["status"] == status and isinstance(job["create_time"], int) and isinstance(job["priority"], int)
        assert job["outputs_count"] == 0 and job["previewable_outputs_count"] == 0
    server.json("POST", "/interrupt", {"prompt_id": running_id})
    server.wait_history(running_id, timeout=15)
    server.wait_history(pending_id, timeout=15)
    status, finished = server.json("GET", "/api/jobs?status=completed,failed,cancelled&limit=50")
    assert status == 200
    by_id = {j["id"]: j for j in finished["jobs"]}
    cancelled = by_id[running_id]
    assert cancelled["status"] == "cancelled" and cancelled["execution_end_time"] >= cancelled["execution_start_time"]
    done = by_id[pending_id]
    assert done["status"] == "completed" and done["completion_status"] == "success" and not done["has_errors"]
    # PreviewAny shows text only: no output item, but the text is the preview of last resort
    assert done["outputs_count"] == 0 and done["preview_output"] == {"content": "3", "nodeId": "2",
                                                                     "mediaType": "text"}
    _, only_cancelled = server.json("GET", "/api/jobs?status=cancelled&limit=50")
    assert running_id in {j["id"] for j in only_cancelled["jobs"]} and pending_id not in {
        j["id"] for j in only_cancelled["jobs"]}
    status, one = server.json("GET", f"/api/jobs/{pending_id}")
    assert one["execution_status"]["status_str"] == "success" and one["workflow"]["prompt"]["1"]
    assert server.json("GET", "/api/jobs?sort_by=execution_duration&status=completed")[0] == 200


def test_jobs_carry_the_clients_workflow_id_and_create_time(server):
    extra = {"extra_pnginfo": {"workflow": {"id": "wf-7f2", "nodes": []}}, "create_time": 1234567}
    status, body = server.json("POST", "/prompt", {"prompt": slow_prompt(1, 0.0), "extra_data": extra})
    assert status == 200
    server.wait_history(body["prompt_id"])
    _, listed = server.json("GET", "/api/jobs?status=completed&limit=200")
    job = next(j for j in listed["jobs"] if j["id"] == body["prompt_id"])
    assert job["workflow_id"] == "wf-7f2" and job["create_time"] == 1234567
    _, one = server.json("GET", f"/api/jobs/{body['prompt_id']}")
    assert one["workflow_id"] == "wf-7f2" and one["extra_data"]["create_time"] == 1234567


def test_a_client_that_connects_mid_job_is_told_the_running_node(server):
    status, body = server.post_prompt(slow_prompt(steps=60, delay=0.05), client_id="late")
    assert status == 200
    deadline = time.time() + 30
    while time.time() < deadline and server.json("GET", "/internal/workers")[1][0]["prompt_id"] != body["prompt_id"]:
        time.sleep(0.05)
    workers = server.json("GET", "/internal/workers")[1]
    assert [(w["name"], w["busy"]) for w in workers] == [("local", True)]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=late") as ws:
                messages, _ = await collect_until_done(ws, body["prompt_id"])
                return messages

    messages = run(scenario())
    assert messages[0]["type"] == "status"
    # node 1 started before this client connected: only the resend on connect can tell it so
    executing = [m["data"] for m in messages if m["type"] == "executing"]
    assert executing[0] == {"node": "1", "prompt_id": body["prompt_id"]}
    assert server.json("GET", "/internal/workers")[1][0]["busy"] is False
