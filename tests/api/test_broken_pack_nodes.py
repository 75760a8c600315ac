"""A pack whose INPUT_TYPES starts raising, or returns what no client can read, after it loaded: /object_info
leaves that node out and answers 200, /system_stats lists it, a prompt using it is a 400 naming it, and a node
whose IS_CHANGED raises is reported on the websocket."""
import asyncio
import json

import aiohttp
import pytest

from tests.server_harness import ServerProcess

PACK = '''
import os

FLAG = os.path.join(os.path.dirname(__file__), "break_now")


class Flaky:
    @classmethod
    def INPUT_TYPES(cls):
        if os.path.exists(FLAG):
            raise RuntimeError("the model list went away")
        return {"required": {"value": ("INT", {"default": 1})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value):
        return (value,)


class Unreadable:
    calls = 0

    @classmethod
    def INPUT_TYPES(cls):
        cls.calls += 1
        if cls.calls == 1:  # fine while the pack loads, garbage afterwards
            return {"required": {"value": ("INT", {"default": 1})}}
        return {"required": {"value": ("INT", {"default": object()})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"

    def run(self, value):
        return (value,)


class ChangeRaises:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 1})}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "test"
    OUTPUT_NODE = True

    @classmethod
    def IS_CHANGED(cls, value):
        raise ValueError("cannot stat the source")

    def run(self, value):
        return {"ui": {"value": [value]}, "result": (value,)}


NODE_CLASS_MAPPINGS = {"Flaky": Flaky, "Unreadable": Unreadable, "ChangeRaises": ChangeRaises}
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("broken")
    pack = base / "custom_nodes" / "flaky_pack"
    pack.mkdir(parents=True)
    (pack / "__init__.py").write_text(PACK)
    srv = ServerProcess(base, packs=()).start()
    (pack / "break_now").write_text("")
    yield srv
    srv.stop()


def test_object_info_leaves_broken_nodes_out_and_lists_them(server):
    status, raw, _ = server.request("GET", "/object_info")
    assert status == 200
    info = json.loads(raw)
    assert "KSampler" in info and "ChangeRaises" in info
    assert "Flaky" not in info and "Unreadable" not in info
    status, raw, _ = server.request("GET", "/object_info/Flaky")
    assert status == 404 and "the model list went away" in json.loads(raw)["error"]["message"]
    _, raw, _ = server.request("GET", "/system_stats")
    left_out = json.loads(raw)["custom_nodes"]["nodes_left_out_of_object_info"]
    assert "RuntimeError" in left_out["Flaky"] and "Unreadable" in left_out
    assert "left out of /object_info" in server.read_log()


def test_a_prompt_with_a_broken_node_is_a_400_naming_it(server):
    prompt = {"1": {"class_type": "Flaky", "inputs": {"value": 3}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    status, raw, _ = server.request("POST", "/prompt", {"prompt": prompt})
    assert status == 400, raw
    body = json.loads(raw)
    assert "1" in body["node_errors"] and body["node_errors"]["1"]["class_type"] == "Flaky"
    assert "the model list went away" in raw.decode()


def test_is_changed_that_raises_is_reported_and_the_node_still_runs(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=chg") as ws:
                await ws.receive()
                prompt = {"1": {"class_type": "ChangeRaises", "inputs": {"value": 4}}}
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": "chg"}) as r:
                    prompt_id = (await r.json())["prompt_id"]
                texts = []
                while True:
                    msg = json.loads((await asyncio.wait_for(ws.receive(), 30)).data)
                    if msg["type"] == "progress_text":
                        texts.append(msg["data"]["text"])
                    if msg["type"] == "executing" and msg["data"]["node"] is None:
                        return prompt_id, texts

    prompt_id, texts = asyncio.run(scenario())
    assert any("IS_CHANGED raised ValueError: cannot stat the source" in t for t in texts)
    _, raw, _ = server.request("GET", f"/history/{prompt_id}")
    assert json.loads(raw)[prompt_id]["status"]["completed"]
    assert "IS_CHANGED of node 1 (ChangeRaises) raised ValueError" in server.read_log()
