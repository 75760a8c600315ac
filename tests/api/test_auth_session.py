"""--auth-token end to end: the token never shows in /system_stats, history or the log; the sign-in page turns it
into an HttpOnly SameSite=Strict session cookie that HTTP routes and the websocket accept; and the editor works
in Chromium behind it."""
import asyncio
import json
import os

import aiohttp
import pytest

from tests.server_harness import ServerProcess

TOKEN = "tok-9f3b1c77e2"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("guarded")
    checkpoints = base / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    os.symlink(tiny_models.checkpoint("sd1"), checkpoints / "v1-5-pruned-emaonly.safetensors")
    server = ServerProcess(base, [f"--auth-token={TOKEN}", "--verbose"], packs=(),
                           probe_query=f"?token={TOKEN}").start()
    yield server
    server.stop()


def bearer():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_the_token_is_in_no_response_and_no_log_line(guarded):
    status, raw, _ = guarded.request("GET", "/system_stats", headers=bearer())
    assert status == 200
    stats = json.loads(raw)
    assert TOKEN not in raw.decode() and any("--auth-token=<redacted>" == a for a in stats["system"]["argv"])
    for path in ("/queue", "/history", "/object_info/KSampler", "/api/jobs", "/features"):
        status, raw, _ = guarded.request("GET", path, headers=bearer())
        assert status == 200 and TOKEN not in raw.decode(), path
    guarded.request("GET", f"/queue?token={TOKEN}")
    guarded.request("GET", "/queue", headers={"Authorization": "Bearer wrong"})
    assert TOKEN not in guarded.read_log()


def test_redaction_of_every_spelling():
    from api.security import redacted_argv
    argv = ["server.py", "--auth-token", "a1", "--auth-token=b2", "--port", "1", "--my-api-key", "c3",
            "--hf-token=d4", "--listen", "0.0.0.0"]
    shown = redacted_argv(argv)
    assert not {"a1", "b2", "c3", "d4"} & set(" ".join(shown).replace("=", " ").split())
    assert shown[4:6] == ["--port", "1"] and shown[-2:] == ["--listen", "0.0.0.0"]


def test_sign_in_sets_a_strict_http_only_cookie_that_routes_and_the_websocket_accept(guarded):
    async def scenario():
        jar = aiohttp.CookieJar(unsafe=True)  # 127.0.0.1: accept cookies for an IP host
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(guarded.url + "/", headers={"Accept": "text/html"},
                                   allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] in ("/login?next=%2F", "/login?next=/")
            async with session.get(guarded.url + "/queue") as r:
                assert r.status == 401  # API clients get JSON, not a redirect
            async with session.get(guarded.url + "/login") as r:
                page = await r.text()
                assert r.status == 200 and 'type="password"' in page and TOKEN not in page
            async with session.post(guarded.url + "/login", data={"token": "nope", "next": "/"},
                                    allow_redirects=False) as r:
                assert r.status == 401 and "not right" in await r.text()
            async with session.post(guarded.url + "/login", data={"token": TOKEN, "next": "//evil.example/x"},
                                    allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/"  # never off-site
                cookie = r.headers["Set-Cookie"]
                assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
            async with session.get(guarded.url + "/queue") as r:
                assert r.status == 200
            async with session.ws_connect(guarded.url + "/ws?clientId=signed-in") as ws:
                first = json.loads((await ws.receive()).data)
                assert first["type"] == "status"
        async with aiohttp.ClientSession() as stranger:  # no cookie: refused
            with pytest.raises(aiohttp.WSServerHandshakeError):
                async with stranger.ws_connect(guarded.url + "/ws?clientId=stranger"):
                    pass

    asyncio.run(scenario())


def test_the_editor_signs_in_and_runs_a_job_in_chromium(guarded, tmp_path):
    from playwright.sync_api import sync_playwright
    from tests.web.helpers import launch_chromium

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(guarded.url + "/")
            page.wait_for_selector('input[name="token"]')
            assert "/login" in page.url
            page.fill('input[name="token"]', TOKEN)
            page.click('button[type="submit"]')
            page.wait_for_function("document.body.dataset.ready === '1'", timeout=30000)
            page.wait_for_selector("#queue-button", timeout=10000)
            assert not [c for c in page.context.cookies() if c["value"] == TOKEN]
            with open(os.path.join(os.path.dirname(__file__), "..", "..", "workflows", "txt2img.json")) as f:
                workflow = json.load(f)
            for node in workflow["nodes"]:
                if node["type"] == "EmptyLatentImage":
                    node["widgets_values"][:2] = [64, 64]
                if node["type"] == "KSampler":
                    node["widgets_values"][2] = 1
            path = tmp_path / "wf.json"
            path.write_text(json.dumps(workflow))
            page.set_input_files("#load-file", str(path))
            page.wait_for_function(f"document.querySelectorAll('#graph-canvas .node').length === "
                                   f"{len(workflow['nodes'])}")
            _, history_before, _ = guarded.request("GET", "/history", headers=bearer())
            page.click("#queue-button")
            page.wait_for_function(f"document.querySelectorAll('.history-item').length >= "
                                   f"{len(json.loads(history_before)) + 1}", timeout=120000)
            _, history, _ = guarded.request("GET", "/history", headers=bearer())
            entries = json.loads(history)
            assert any(e["status"]["completed"] for e in entries.values())
        finally:
            browser.close()
