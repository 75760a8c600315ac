"""A V1 pack written as real packs are (tests/fixtures/packs/v1_features_pack), loaded unmodified by the real
server from custom_nodes/: expansion, lazy inputs, ProgressBar, ComfyAPISync progress and ExecutionBlocker."""
import asyncio
import json

import aiohttp
import pytest

from tests.server_harness import ServerProcess, collect_until_done


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("v1"), packs=("packs/v1_features_pack", "packs/broken_pack.py",
                                                              "packs/good_pack")).start()
    yield srv
    srv.stop()


def test_v1_features_pack_runs_unmodified(server):
    prompt = {
        "expand": {"class_type": "FeatRepeatAdd", "inputs": {"value": 10, "step": 5, "times": 4}},
        "bar": {"class_type": "FeatProgressBar", "inputs": {"steps": 4}},
        "api": {"class_type": "FeatApiSync", "inputs": {"steps": 3}},
        "never": {"class_type": "FeatGate", "inputs": {"value": 1, "block": True}},
        "switch": {"class_type": "FeatLazySwitch", "inputs": {"switch": True, "on_true": ["expand", 0],
                                                               "on_false": ["never", 0]}},
        "gate": {"class_type": "FeatGate", "inputs": {"value": ["bar", 0], "block": True}},
        "show_switch": {"class_type": "PreviewAny", "inputs": {"source": ["switch", 0]}},
        "show_api": {"class_type": "PreviewAny", "inputs": {"source": ["api", 0]}},
        "show_gate": {"class_type": "PreviewAny", "inputs": {"source": ["gate", 0]}},
    }

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=v1") as ws:
                await ws.receive()
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": "v1"}) as r:
                    body = await r.json()
                    assert r.status == 200, body
                messages, _ = await collect_until_done(ws, body["prompt_id"])
                return body["prompt_id"], messages

    prompt_id, messages = asyncio.run(scenario())
    kinds = [m["type"] for m in messages]
    assert "execution_success" in kinds and "execution_error" not in kinds
    executed = {m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed"}
    assert executed["show_switch"] == {"text": ["30"]}  # 10 + 4 x 5 through expanded IntMath nodes
    assert executed["show_api"] == {"text": ["3"]}
    assert "show_gate" not in executed  # blocked by ExecutionBlocker
    ran = [m["data"]["node"] for m in messages if m["type"] == "executing" and m["data"]["node"]]
    assert "never" not in ran  # the untaken lazy branch
    assert sum(1 for n in ran if n.startswith("expand.")) == 4
    progress = [(m["data"]["node"], m["data"]["value"], m["data"]["max"]) for m in messages
                if m["type"] == "progress"]
    assert [p for p in progress if p[0] == "bar"] == [("bar", i, 4) for i in range(1, 5)]
    assert [p for p in progress if p[0] == "api"] == [("api", i, 3) for i in range(1, 4)]
    history = server.wait_history(prompt_id)
    assert history["status"]["completed"]


def test_packs_are_reported_in_system_stats(server):
    status, stats = server.json("GET", "/system_stats")
    assert "v1_features_pack" in stats["custom_nodes"]["loaded"] and "good_pack" in stats["custom_nodes"]["loaded"]
    failed = {p["name"]: p["error"] for p in stats["custom_nodes"]["failed"]}
    assert "broken_pack" in failed and "Traceback" in failed["broken_pack"]
    _, info = server.json("GET", "/object_info")
    assert "FeatRepeatAdd" in info and info["FeatRepeatAdd"]["python_module"] == "custom_nodes.v1_features_pack"
    _, extensions = server.json("GET", "/extensions")
    assert any(e.startswith("/extensions/good_pack/") for e in extensions)
