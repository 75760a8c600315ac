"""/view and /upload (traversal refused, de-duplication), security defaults and bad input (docs/architecture.md §8)."""
import io
import json
import os
import uuid

import pytest
from PIL import Image

from tests.server_harness import ServerProcess, simple_prompt


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("files")
    srv = ServerProcess(base, ["--max-upload-size", "1"], packs=()).start()
    yield srv
    srv.stop()


def png_bytes(color=(255, 0, 0), size=(8, 8), mode="RGB"):
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(fields, filename="pic.png", data=None, field="image"):
    boundary = uuid.uuid4().hex
    lines = []
    for name, value in fields.items():
        lines += [f"--{boundary}", f'Content-Disposition: form-data; name="{name}"', "", value]
    body = ("\r\n".join(lines) + "\r\n").encode() if lines else b""
    if data is not None:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: image/png\r\n\r\n").encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def upload(server, data, filename="pic.png", path="/upload/image", **fields):
    body, headers = multipart(fields, filename, data)
    status, raw, _ = server.request("POST", path, headers=headers, raw=body)
    return status, json.loads(raw)


def test_upload_then_view_round_trip_and_dedup(server):
    data = png_bytes()
    status, body = upload(server, data, "red.png")
    assert status == 200 and body == {"name": "red.png", "subfolder": "", "type": "input"}
    status, raw, headers = server.request("GET", "/view?filename=red.png&type=input")
    assert status == 200 and raw == data and headers["Content-Type"] == "image/png"
    assert upload(server, data, "red.png")[1]["name"] == "red.png"  # identical bytes: same name
    assert upload(server, png_bytes((0, 255, 0)), "red.png")[1]["name"] == "red (1).png"
    assert upload(server, png_bytes((0, 0, 255)), "red.png", overwrite="true")[1]["name"] == "red.png"
    status, body = upload(server, data, "sub.png", subfolder="a/b", type="temp")
    assert status == 200 and body == {"name": "sub.png", "subfolder": "a/b", "type": "temp"}
    assert server.request("GET", "/view?filename=sub.png&subfolder=a/b&type=temp")[0] == 200


def test_upload_names_are_reduced_to_a_basename(server):
    status, body = upload(server, png_bytes(), "../../escape.png")
    assert status == 200 and body["name"] == "escape.png"
    assert os.path.isfile(os.path.join(server.base_dir, "input", "escape.png"))


@pytest.mark.parametrize("query", [
    "filename=../../etc/passwd&type=input",
    "filename=passwd&subfolder=../../../etc&type=input",
    "filename=%2Fetc%2Fpasswd&type=output",
    "filename=x.png&subfolder=%2E%2E%2F%2E%2E&type=output",
    "filename=x.png&subfolder=/etc&type=output",
])
def test_view_traversal_attempts_are_refused(server, query):
    status, raw, _ = server.request("GET", "/view?" + query)
    assert status in (403, 400), raw
    assert b"root:" not in raw


def test_view_refuses_a_symlink_that_points_outside(server, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    link = os.path.join(server.base_dir, "input", "innocent.png")
    os.symlink(secret, link)
    status, raw, _ = server.request("GET", "/view?filename=innocent.png&type=input")
    assert status == 403 and b"top secret" not in raw


def test_upload_traversal_in_subfolder_is_refused(server):
    status, body = upload(server, png_bytes(), "x.png", subfolder="../../outside")
    assert status == 403 and body["error"]["type"] == "forbidden"
    assert upload(server, png_bytes(), "x.png", type="models")[0] == 400


def test_html_is_never_served_as_active_content(server):
    with open(os.path.join(server.base_dir, "output", "evil.html"), "w") as f:
        f.write("<script>alert(1)</script>")
    status, _, headers = server.request("GET", "/view?filename=evil.html")
    assert status == 200
    assert headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment")
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_view_preview_and_channel_conversion(server):
    upload(server, png_bytes((10, 20, 30, 128), mode="RGBA"), "alpha.png")
    status, raw, headers = server.request("GET", "/view?filename=alpha.png&type=input&preview=webp;50")
    assert status == 200 and headers["Content-Type"] == "image/webp" and raw[8:12] == b"WEBP"
    status, raw, _ = server.request("GET", "/view?filename=alpha.png&type=input&channel=a")
    assert status == 200 and Image.open(io.BytesIO(raw)).getpixel((0, 0)) == 128
    status, raw, _ = server.request("GET", "/view?filename=alpha.png&type=input&channel=rgb")
    assert Image.open(io.BytesIO(raw)).mode == "RGB"


def test_upload_mask_applies_alpha_to_the_original(server):
    upload(server, png_bytes((200, 100, 50)), "base.png")
    mask = png_bytes((0, 0, 0, 0), mode="RGBA")
    status, body = upload(server, mask, "base-mask.png", path="/upload/mask",
                          original_ref=json.dumps({"filename": "base.png", "type": "input"}))
    assert status == 200
    status, raw, _ = server.request("GET", f"/view?filename={body['name']}&type=input")
    pixel = Image.open(io.BytesIO(raw)).getpixel((0, 0))
    assert pixel == (200, 100, 50, 0)
    assert upload(server, mask, "m.png", path="/upload/mask", original_ref="{bad json")[0] == 400


def test_oversized_upload_is_a_413_and_the_server_keeps_serving(server):
    body, headers = multipart({}, "big.png", b"\0" * (2 * 1024 * 1024))
    status, raw, _ = server.request("POST", "/upload/image", raw=body, headers=headers)
    assert status == 413 and json.loads(raw)["error"]["type"] == "payload_too_large"
    assert server.request("GET", "/health")[0] == 200


@pytest.mark.parametrize("method,path,body,headers,code", [
    ("POST", "/prompt", b"{not json", {}, 400),
    ("POST", "/prompt", b"[1, 2]", {"Content-Type": "application/json"}, 400),
    ("POST", "/prompt", b"", {"Content-Type": "application/json"}, 400),
    ("POST", "/prompt", b"--x--", {"Content-Type": "multipart/form-data; boundary=x"}, 415),
    ("POST", "/upload/image", b"{}", {"Content-Type": "application/json"}, 415),
    ("POST", "/upload/image", b"--zz\r\ngarbage", {"Content-Type": "multipart/form-data; boundary=x"}, 400),
    ("GET", "/no/such/route", None, {}, 404),
    ("DELETE", "/prompt", None, {}, 405),
    ("PUT", "/queue", b"{}", {}, 405),
    ("POST", "/queue", b'{"delete": "x"}', {}, 400),
    ("POST", "/history", b"7", {}, 400),
    ("GET", "/view", None, {}, 400),
    ("GET", "/view?filename=x.png&type=bogus", None, {}, 400),
    ("GET", "/view?filename=missing.png", None, {}, 404),
    ("POST", "/prompt", b'{"prompt": {}, "extra_data": 5}', {}, 400),
    ("POST", "/prompt", b'{"prompt": {}, "prompt_id": 12}', {}, 400),
])
def test_bad_requests_get_clear_json_4xx(server, method, path, body, headers, code):
    status, raw, response_headers = server.request(method, path, headers=headers, raw=body)
    assert status == code, raw
    payload = json.loads(raw)
    assert payload["error"]["message"]
    assert server.request("GET", "/health")[0] == 200


def test_cross_site_requests_are_refused(server):
    host = server.url.split("//")[1]
    ok = {"Origin": server.url, "Host": host}
    assert server.request("POST", "/prompt", {"prompt": simple_prompt()}, headers=ok)[0] == 200
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://127.0.0.1:1"}):
        status, raw, _ = server.request("POST", "/prompt", {"prompt": simple_prompt()}, headers=headers)
        assert status == 403 and json.loads(raw)["error"]["type"] == "forbidden"


def test_auth_token_is_required_when_set(tmp_path):
    srv = ServerProcess(tmp_path, ["--auth-token", "s3cret"], packs=())
    srv.extra_args += []
    # /health is probed by the harness without a token, so start and probe manually
    import subprocess
    import sys
    import time
    import urllib.request
    from tests.server_harness import ROOT
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(srv.port),
                             "--base-directory", str(tmp_path), "--auth-token", "s3cret"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(srv.url + "/health?token=s3cret", timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        assert srv.request("GET", "/queue")[0] == 401
        assert srv.request("GET", "/queue", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert srv.request("GET", "/queue", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert srv.request("GET", "/queue?token=s3cret")[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_listening_beyond_loopback_needs_a_token():
    import subprocess
    import sys
    from tests.server_harness import ROOT, free_port
    result = subprocess.run([sys.executable, "server.py", "--listen", "0.0.0.0", "--port", str(free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--auth-token" in result.stderr


def test_view_metadata_reads_the_safetensors_header(server):
    import torch
    from safetensors.torch import save_file
    path = os.path.join(server.base_dir, "models", "loras", "style.safetensors")
    save_file({"w": torch.zeros(2)}, path, metadata={"ss_network_dim": "32", "modelspec.title": "Style"})
    status, meta = server.json("GET", "/view_metadata/loras?filename=style.safetensors")
    assert status == 200 and meta == {"ss_network_dim": "32", "modelspec.title": "Style"}
    assert server.json("GET", "/view_metadata/loras?filename=missing.safetensors")[0] == 404
    assert server.json("GET", "/view_metadata/loras?filename=../../x.safetensors")[0] == 404
    assert server.json("GET", "/view_metadata/nope?filename=style.safetensors")[0] == 404
    with open(os.path.join(server.base_dir, "models", "loras", "junk.safetensors"), "wb") as f:
        f.write(b"\xff" * 4)
    assert server.json("GET", "/view_metadata/loras?filename=junk.safetensors")[0] == 400
    assert "style.safetensors" in server.json("GET", "/models/loras")[1]
