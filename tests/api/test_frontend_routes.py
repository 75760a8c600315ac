"""The routes ComfyUI's frontend reads beyond the core API, on a real server: /i18n, /workflow_templates,
/global_subgraphs, /experiment/models, /internal/*, /templates, /favicon.ico."""
import json
import os
import urllib.parse

import pytest
from PIL import Image
from safetensors.torch import save_file
import torch

from tests.server_harness import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("frontend_routes")
    models = base / "models" / "checkpoints"
    models.mkdir(parents=True)
    save_file({"w": torch.zeros(2)}, str(models / "tiny.safetensors"))
    (models / "sub").mkdir()
    save_file({"w": torch.zeros(2)}, str(models / "sub" / "deep.safetensors"))
    Image.new("RGB", (4, 4), (255, 0, 0)).save(str(models / "tiny.png"))
    (models / "notes.txt").write_text("not a model")
    srv = ServerProcess(base, packs=("frontend_pack",)).start()
    yield srv
    srv.stop()


def test_i18n_merges_the_packs_locales(server):
    status, body = server.json("GET", "/api/i18n")
    assert status == 200
    assert body["en"]["menu"] == {"hello": "Hello"} and body["fr"]["menu"] == {"hello": "Bonjour"}
    assert body["en"]["nodeDefs"] == {"MyNode": {"display_name": "My Node"}}  # nodeDefs.json under its key


def test_workflow_templates_and_blueprints(server):
    assert server.json("GET", "/api/workflow_templates") == (200, {"frontend_pack": ["demo"]})
    status, data, _ = server.request("GET", "/api/workflow_templates/frontend_pack/demo.json")
    assert status == 200 and json.loads(data)["version"] == 0.4
    assert server.request("GET", "/api/workflow_templates/frontend_pack/..%2F__init__.py")[0] in (403, 404)
    status, blueprints = server.json("GET", "/api/global_subgraphs")
    assert status == 200 and len(blueprints) == 1
    key, entry = next(iter(blueprints.items()))
    assert entry == {"source": "custom_node", "name": "My Blueprint", "info": {"node_pack": "custom_nodes.frontend_pack"}}
    status, one = server.json("GET", f"/api/global_subgraphs/{key}")
    assert json.loads(one["data"])["definitions"]["subgraphs"][0]["name"] == "My Blueprint"
    assert server.request("GET", "/api/global_subgraphs/nope")[0] == 404


def test_model_library(server):
    status, kinds = server.json("GET", "/api/experiment/models")
    names = [k["name"] for k in kinds]
    assert status == 200 and "checkpoints" in names and "configs" not in names and "custom_nodes" not in names
    status, files = server.json("GET", "/api/experiment/models/checkpoints")
    assert [f["name"] for f in files] == ["sub/deep.safetensors", "tiny.safetensors"]  # models only
    assert files[1]["pathIndex"] == 0 and files[1]["size"] > 0 and files[1]["modified"] > 0
    assert server.request("GET", "/api/experiment/models/not_a_kind")[0] == 404
    status, data, headers = server.request("GET", "/api/experiment/models/preview/checkpoints/0/tiny.safetensors")
    assert status == 200 and headers["Content-Type"] == "image/webp" and data[:4] == b"RIFF"
    assert server.request("GET", "/api/experiment/models/preview/checkpoints/0/sub/deep.safetensors")[0] == 404
    traversal = urllib.parse.quote("../../user/x", safe="")
    assert server.request("GET", f"/api/experiment/models/preview/checkpoints/0/{traversal}")[0] in (403, 404)


def test_internal_routes(server):
    status, paths = server.json("GET", "/internal/folder_paths")
    assert status == 200 and paths["checkpoints"][0].endswith(os.path.join("models", "checkpoints"))
    status, logs = server.json("GET", "/internal/logs")
    assert status == 200 and isinstance(logs, str)
    status, raw = server.json("GET", "/internal/logs/raw")
    assert status == 200 and isinstance(raw["entries"], list) and raw["size"]["cols"] > 0
    assert raw["entries"] and all(set(e) == {"t", "m"} and e["m"].endswith("\n") for e in raw["entries"])
    assert raw["entries"][0]["m"] in logs
    assert server.request("PATCH", "/internal/logs/subscribe", {"clientId": "c1", "enabled": True})[0] == 200
    assert server.request("PATCH", "/internal/logs/subscribe", {"enabled": True})[0] == 400
    Image.new("RGB", (2, 2)).save(os.path.join(server.base_dir, "input", "a.png"))
    assert "a.png" in server.json("GET", "/internal/files/input")[1]
    assert server.json("GET", "/internal/files/models")[0] == 400


def test_templates_and_favicon(server):
    status, data, headers = server.request("GET", "/favicon.ico")
    assert status == 200 and b"<svg" in data
    # the test extra installs the templates' JSON package (index and workflows, not the thumbnails)
    status, data, _ = server.request("GET", "/templates/index.json")
    assert status == 200 and isinstance(json.loads(data), list)
    assert server.request("GET", "/templates/index_logo.json")[0] == 200
    assert server.request("GET", "/templates/no_such_template.webp")[0] == 404
    assert server.request("GET", "/templates/..%2F..%2Fsecret")[0] in (403, 404)


def test_log_subscribers_get_new_lines_on_the_websocket(server):
    import asyncio
    import aiohttp

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=log-watcher") as ws:
                await ws.receive()  # the status greeting
                async with session.patch(f"{server.url}/internal/logs/subscribe",
                                         json={"clientId": "log-watcher", "enabled": True}) as r:
                    assert r.status == 200
                prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
                          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                deadline = asyncio.get_running_loop().time() + 15
                while asyncio.get_running_loop().time() < deadline:
                    msg = await ws.receive(timeout=15)
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        data = json.loads(msg.data)
                        if data["type"] == "logs" and any(prompt_id in e["m"] for e in data["data"]["entries"]):
                            assert data["data"]["size"]["cols"] > 0
                            return True
                return False

    assert asyncio.run(scenario())
