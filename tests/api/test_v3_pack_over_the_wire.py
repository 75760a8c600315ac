"""The V3 fixture pack in a real server's custom_nodes/: its prestartup script, its route (also under /api, where
the frontend calls it), its nodes in /object_info and a dynamic-input node run over HTTP and the websocket."""
import asyncio

import aiohttp
import pytest

from tests.server_harness import ServerProcess, collect_until_done


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("v3"), packs=("packs/v3_extension_pack",)).start()
    yield srv
    srv.stop()


def test_pack_route_is_served_plain_and_under_api(server):
    for path in ("/v3pack/hello", "/api/v3pack/hello"):
        status, body = server.json("GET", path)
        assert status == 200 and body == {"hello": "v3", "prestartup": "ran"}, (path, status, body)


def test_pack_reads_client_feature_flags(server):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=flags") as ws:
                await ws.receive()  # status
                await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
                await ws.receive()  # the server's own flags in reply
                async with session.get(f"{server.url}/api/v3pack/features?sid=flags") as r:
                    mine = await r.json()
                async with session.get(f"{server.url}/api/v3pack/features?sid=nobody") as r:
                    other = await r.json()
                return mine, other

    mine, other = asyncio.run(scenario())
    assert mine["preview_metadata"] is True and other["preview_metadata"] is False
    assert "supports_preview_metadata" in mine["server"]


def test_v3_nodes_in_object_info_and_run_over_the_wire(server):
    status, info = server.json("GET", "/object_info/V3Sum")
    assert status == 200 and info["V3Sum"]["input"]["required"]["numbers"][0] == "COMFY_AUTOGROW_V3"
    prompt = {"sum": {"class_type": "V3Sum", "inputs": {"numbers.n0": 2, "numbers.n1": 3}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["sum", 0]}}}

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=v3") as ws:
                await ws.receive()
                async with session.post(f"{server.url}/api/prompt", json={"prompt": prompt, "client_id": "v3"}) as r:
                    body = await r.json()
                    assert r.status == 200, body
                messages, _ = await collect_until_done(ws, body["prompt_id"])
                return messages

    messages = asyncio.run(scenario())
    executed = {m["data"]["node"]: m["data"]["output"] for m in messages if m["type"] == "executed"}
    assert executed["show"] == {"text": ["5"]}
    assert executed["sum"] == {"text": ["sum:['n0', 'n1']=5"]}
    bad = {"sum": {"class_type": "V3Sum", "inputs": {"numbers.n0": 2, "numbers.n1": "x"}},
           "show": {"class_type": "PreviewAny", "inputs": {"source": ["sum", 0]}}}
    status, body = server.post_prompt(bad)
    assert status == 400 and body["node_errors"]["sum"]["errors"][0]["extra_info"]["input_name"] == "numbers.n1"
