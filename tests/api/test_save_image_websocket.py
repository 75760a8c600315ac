"""SaveImageWebsocket as ComfyUI's websocket example client uses it: the images arrive as binary frames (type 1,
format 2 = PNG) on the queuing client's socket while the node runs, and again on every run (never cached)."""
import asyncio
import io
import struct

import aiohttp
import pytest
from PIL import Image

from tests.server_harness import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("wsimg"), packs=()).start()
    yield srv
    srv.stop()


async def _images_of(server, prompt, client_id):
    frames = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.url}/ws?clientId={client_id}") as ws:
            async with session.post(f"{server.url}/prompt", json={"prompt": prompt, "client_id": client_id}) as r:
                body = await r.json()
                assert r.status == 200, body
            current = None
            while True:
                msg = await asyncio.wait_for(ws.receive(), 30)
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = msg.json()
                    if data["type"] == "executing" and data["data"]["prompt_id"] == body["prompt_id"]:
                        current = data["data"]["node"]
                        if current is None:
                            return frames
                    if data["type"] == "execution_error":
                        raise AssertionError(data)
                elif msg.type == aiohttp.WSMsgType.BINARY and current == "save":
                    frames.append(msg.data)


def test_images_arrive_as_png_frames_on_every_run(server):
    prompt = {"img": {"class_type": "EmptyImage", "inputs": {"width": 24, "height": 16, "batch_size": 2,
                                                             "color": 0xFF0000}},
              "save": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["img", 0]}}}
    for _ in range(2):  # the second run finds everything cached, yet sends the images again
        frames = asyncio.run(_images_of(server, prompt, "wsimg"))
        assert len(frames) == 2
        for frame in frames:
            kind, fmt = struct.unpack(">II", frame[:8])
            assert (kind, fmt) == (1, 2)
            image = Image.open(io.BytesIO(frame[8:]))
            assert image.format == "PNG" and image.size == (24, 16)
            assert image.convert("RGB").getpixel((3, 3)) == (255, 0, 0)
