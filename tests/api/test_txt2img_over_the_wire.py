"""The first image end to end over the wire: POST /prompt with txt2img on tiny SD1 and SDXL checkpoints."""
import asyncio
import io
import json
import os

import aiohttp
import pytest
from PIL import Image

from tests.server_harness import ServerProcess, collect_until_done

WORKFLOWS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                         "workflows")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("txt2img")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(tiny_models.checkpoint("sd1"), checkpoints / "v1-5-pruned-emaonly.safetensors")
    os.symlink(tiny_models.checkpoint("sdxl"), checkpoints / "sd_xl_base_1.0.safetensors")
    os.symlink(tiny_models.checkpoint("sdxl_refiner"), checkpoints / "sd_xl_refiner_1.0.safetensors")
    srv = ServerProcess(base, packs=()).start()
    yield srv
    srv.stop()


def workflow(name, **changes):
    with open(os.path.join(WORKFLOWS, f"{name}.api.json")) as f:
        prompt = json.load(f)
    for key, value in changes.items():
        node, field = key.split("__")
        prompt[node]["inputs"][field] = value
    return prompt


CASES = {
    "sd1": ("txt2img", {"5__width": 64, "5__height": 64, "3__steps": 5}, "9"),
    "sdxl": ("sdxl_base_refiner", {"5__width": 64, "5__height": 64, "10__steps": 5, "10__end_at_step": 3,
                                   "11__steps": 5, "11__start_at_step": 3}, "19"),
}


@pytest.mark.parametrize("family", list(CASES))
def test_post_prompt_yields_a_png_with_the_prompt_embedded(server, family):
    name, changes, save_node = CASES[family]
    prompt = workflow(name, **changes)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{server.url}/ws?clientId={family}") as ws:
                await ws.receive()
                extra = {"extra_pnginfo": {"workflow": {"x": 1}}}
                if family == "sd1":  # this job asks for step previews, as the editor does
                    extra["preview_method"] = "auto"
                body = {"prompt": prompt, "client_id": family, "extra_data": extra}
                async with session.post(f"{server.url}/prompt", json=body) as r:
                    assert r.status == 200, await r.text()
                    prompt_id = (await r.json())["prompt_id"]
                messages, frames = await collect_until_done(ws, prompt_id, timeout=120)
                async with session.get(f"{server.url}/history/{prompt_id}") as r:
                    entry = (await r.json())[prompt_id]
                image = entry["outputs"][save_node]["images"][0]
                async with session.get(f"{server.url}/view", params=image) as r:
                    png = await r.read()
                return messages, frames, entry, png

    messages, frames, entry, png = asyncio.run(scenario())
    assert entry["status"]["completed"], entry["status"]["messages"]
    progress = [m for m in messages if m["type"] == "progress"]
    assert progress and progress[-1]["data"]["value"] == progress[-1]["data"]["max"]
    if family == "sd1":
        assert frames, "latent previews arrive as binary frames when the job asks for them"
    else:
        assert not frames, "without extra_data.preview_method a job gets no previews (the server default is none)"
    picture = Image.open(io.BytesIO(png))
    assert picture.size == (64, 64)
    assert json.loads(picture.text["prompt"]) == prompt  # the embedded prompt round-trips
    assert json.loads(picture.text["workflow"]) == {"x": 1}
