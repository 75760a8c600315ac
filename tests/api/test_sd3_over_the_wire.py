"""An SD3 job through the real server: POST /prompt, the websocket's progress and latent previews (16-channel
factors), the image in /history and /view, on a tiny random SD3.5-medium-shaped checkpoint."""
import asyncio
import io
import os

import aiohttp
import pytest
from PIL import Image

from tests.nodes.test_sd3_nodes import checkpoint_prompt
from tests.server_harness import ServerProcess, collect_until_done


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("sd3_server")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(tiny_models.sd3("checkpoint"), checkpoints / "sd3.5_medium_incl_clips.safetensors")
    srv = ServerProcess(base, packs=(), extra_args=["--preview-method", "latent2rgb"]).start()
    yield srv
    srv.stop()


def test_sd3_txt2img_over_http_and_websocket(server):
    prompt = checkpoint_prompt(steps=3)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId=sd3") as ws:
                await ws.receive()
                async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": "sd3"}) as r:
                    body = await r.json()
                    assert r.status == 200, body
                messages, binary = await collect_until_done(ws, body["prompt_id"], timeout=120)
                return body["prompt_id"], messages, binary

    prompt_id, messages, binary = asyncio.run(scenario())
    kinds = [m["type"] for m in messages]
    assert "execution_success" in kinds and "execution_error" not in kinds, messages
    steps = [(m["data"]["value"], m["data"]["max"]) for m in messages
             if m["type"] == "progress" and m["data"]["node"] == "sample"]
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert len(binary) >= 3  # a latent preview per step
    history = server.wait_history(prompt_id)
    assert history["status"]["completed"]
    info = history["outputs"]["save"]["images"][0]
    status, data, _ = server.request("GET", f"/view?filename={info['filename']}&type=output")
    assert status == 200 and Image.open(io.BytesIO(data)).size == (64, 48)


def test_a_model_family_mismatch_is_a_node_error_not_a_crash(server):
    prompt = checkpoint_prompt(steps=1)
    prompt["latent"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    status, body = server.post_prompt(prompt)
    assert status == 200, body
    history = server.wait_history(body["prompt_id"], timeout=60)
    assert history["status"]["status_str"] == "error"
    error = [m for m in history["status"]["messages"] if m[0] == "execution_error"][0][1]
    assert error["node_id"] == "sample"
    assert "the latent has 4 channels but this model takes 16" in error["exception_message"]
