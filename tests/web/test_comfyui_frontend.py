"""ComfyUI's official frontend (the comfyui-frontend-package) served by Tessera (`--front-end comfyui`), driven in
Chromium: it boots without a failed request to our server, a pack's JS written for it takes effect, settings and
workflows saved through it survive a reload, the Model Library lists our checkpoints, and a txt2img run shows its
image while the Job Queue reads our /api/jobs without a validation error. Screenshots go to tests/web/artifacts/.
The browser is the session's (tests/web/conftest.py); the frontend package comes with the test extra."""
import json
import os
import shutil
import time

import pytest

from tests.server_harness import ServerProcess
from tests.web.helpers import ARTIFACTS


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Files a user may or may not have; ComfyUI answers 404 for them too when they are absent, and the frontend
# expects that (an optional stylesheet, optional custom templates, the workflows folder's index it keeps itself).
OPTIONAL_USER_FILES = ("/user.css", "/api/userdata/user.css", "/api/userdata/comfy.templates.json",
                       "/api/userdata/workflows%2F.index.json")
# A model without a preview picture (our random-weight test model has none): 404, as from ComfyUI.
NO_PREVIEW = "/api/experiment/models/preview/checkpoints/0/tiny_sd1.webp"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_models):
    base = tmp_path_factory.mktemp("comfyui_frontend")
    folder = base / "models" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(tiny_models.checkpoint("sd1"), folder / "tiny_sd1.safetensors")
    # a returning user: the first-visit template browser would fetch thumbnails, which live in the templates'
    # media packages (500 MB) that the test extra leaves out (it installs their index and workflows only)
    user = base / "user" / "default"
    user.mkdir(parents=True)
    (user / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    srv = ServerProcess(base, ["--front-end", "comfyui"], packs=("litegraph_pack",)).start()
    yield srv
    srv.stop()


class Page:
    """One browser page on the server, recording what went wrong: HTTP errors from our server, failed requests
    to it, page errors and console errors."""

    def __init__(self, browser, server):
        self.server = server
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.http_errors, self.failed, self.console = [], [], []
        ours = server.url
        self.page.on("response", lambda r: self.http_errors.append((r.status, r.request.method, r.url))
                     if r.status >= 400 and r.url.startswith(ours) else None)
        self.page.on("requestfailed", lambda r: self.failed.append((r.method, r.url, r.failure))
                     if r.url.startswith(ours) and "ERR_ABORTED" not in (r.failure or "") else None)
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)

    def open(self):
        self.page.goto(self.server.url + "/")
        self.page.wait_for_selector("canvas", timeout=60000)
        self.page.wait_for_function("() => window.app && window.app.graph && window.app.extensionManager",
                                    timeout=60000)
        return self

    def reload(self):
        self.page.reload()
        self.page.wait_for_selector("canvas", timeout=60000)
        self.page.wait_for_function("() => window.app && window.app.extensionManager", timeout=60000)

    def unexpected_errors(self):
        return [e for e in self.http_errors if not any(e[2].split("?")[0].endswith(f) for f in OPTIONAL_USER_FILES)
                and not e[2].endswith(NO_PREVIEW)]

    def shot(self, name):
        os.makedirs(ARTIFACTS, exist_ok=True)
        self.page.screenshot(path=os.path.join(ARTIFACTS, f"comfyui_frontend_{name}.png"))


def txt2img_graph(steps=2, size=64):
    with open(os.path.join(ROOT, "workflows", "txt2img.json"), encoding="utf-8") as f:
        graph = json.load(f)
    for node in graph["nodes"]:
        if node["type"] == "CheckpointLoaderSimple":
            node["widgets_values"] = ["tiny_sd1.safetensors"]
        elif node["type"] == "EmptyLatentImage":
            node["widgets_values"] = [size, size, 1]
        elif node["type"] == "KSampler":
            node["widgets_values"] = [42, "fixed", steps, 7.0, "euler", "normal", 1.0]
    return graph


def test_boots_without_failed_requests_and_a_packs_js_takes_effect(browser, server):
    page = Page(browser, server).open()
    page.page.wait_for_timeout(3000)  # the panels' first requests (templates, jobs, models) go out after boot
    page.shot("boot")
    assert page.unexpected_errors() == [], page.unexpected_errors()
    assert page.failed == [], page.failed
    pack = page.page.evaluate("() => window.__litegraphPack")
    assert pack["setup"] and pack["liteGraph"] and pack["canvasClass"] and "KSampler" in pack["seen"]
    made = page.page.evaluate("""() => { const n = LiteGraph.createNode('KSampler');
        return {title: n.title, note: (n.widgets.find(w => w.name === 'pack_note') || {}).value}; }""")
    # its onNodeCreated hook runs on nodes of our catalogue, and adds a widget made with ComfyWidgets
    assert made == {"title": "KSampler (patched by a pack)", "note": "from the pack"}
    assert pack["statuses"] >= 1  # our websocket's status event reached its api.addEventListener
    page.page.close()


def test_a_setting_survives_a_reload(browser, server):
    page = Page(browser, server).open()
    page.page.evaluate("async () => { await window.app.extensionManager.setting.set('Comfy.Graph.ZoomSpeed', 1.3) }")
    page.reload()
    assert page.page.evaluate("() => window.app.extensionManager.setting.get('Comfy.Graph.ZoomSpeed')") == 1.3
    with open(os.path.join(server.base_dir, "user", "default", "comfy.settings.json"), encoding="utf-8") as f:
        assert json.load(f)["Comfy.Graph.ZoomSpeed"] == 1.3
    page.page.close()


def test_ctrl_s_saves_a_workflow_that_reopens_after_a_reload(browser, server):
    page = Page(browser, server).open()
    page.page.evaluate("async (g) => { await window.app.loadGraphData(g) }", txt2img_graph())
    page.page.mouse.click(700, 600)  # focus the graph (an empty spot of the canvas)
    page.page.keyboard.press("Control+s")
    prompt = page.page.get_by_role("dialog").filter(has_text="Save workflow").locator("input").first
    prompt.wait_for(timeout=10000)
    prompt.fill("tessera saved")
    page.page.keyboard.press("Enter")
    saved = os.path.join(server.base_dir, "user", "default", "workflows", "tessera saved.json")
    deadline = time.time() + 10
    while time.time() < deadline and not os.path.isfile(saved):
        time.sleep(0.1)
    with open(saved, encoding="utf-8") as f:
        assert sorted(n["type"] for n in json.load(f)["nodes"])[0] == "CLIPTextEncode"
    page.reload()
    paths = page.page.evaluate("() => window.app.extensionManager.workflow.workflows.map(w => w.path)")
    assert "workflows/tessera saved.json" in paths
    page.page.get_by_role("button", name="Workflows (w)").click()
    page.page.get_by_text("tessera saved").first.click()
    page.page.wait_for_function("() => window.app.graph.nodes.some(n => n.type === 'KSampler')", timeout=10000)
    page.shot("workflow_reopened")
    assert page.unexpected_errors() == [], page.unexpected_errors()
    page.page.close()


def test_the_model_library_lists_checkpoints(browser, server):
    page = Page(browser, server).open()
    page.page.get_by_role("button", name="Model Library (m)").click()
    page.page.get_by_text("checkpoints", exact=False).first.click()
    page.page.get_by_text("tiny_sd1").first.wait_for(timeout=10000)
    page.shot("model_library")
    assert page.unexpected_errors() == [], page.unexpected_errors()
    page.page.close()


def test_txt2img_runs_and_the_job_queue_reads_our_jobs(browser, server):
    page = Page(browser, server).open()
    page.page.evaluate("async (g) => { await window.app.loadGraphData(g) }", txt2img_graph(steps=12, size=192))
    for _ in range(3):  # one runs while the others wait
        page.page.evaluate("async () => { await window.app.queuePrompt(0, 1) }")
    jobs = page.page.evaluate("async () => (await (await fetch('/api/jobs?status=in_progress,pending')).json())")
    assert {j["status"] for j in jobs["jobs"]} <= {"in_progress", "pending"} and jobs["jobs"]
    page.page.get_by_role("button", name="active").first.click()
    page.shot("job_queue_running")
    page.page.wait_for_function(
        "() => window.app.nodeOutputs && window.app.nodeOutputs['9'] && window.app.nodeOutputs['9'].images",
        timeout=120000)
    image = page.page.evaluate("() => window.app.nodeOutputs['9'].images[0]")
    assert "9" in page.page.evaluate("() => window.__litegraphPack.executed")  # the pack heard "executed"
    assert os.path.isfile(os.path.join(server.base_dir, "output", image["subfolder"], image["filename"]))
    deadline = time.time() + 120
    while time.time() < deadline and server.json("GET", "/api/jobs?status=in_progress,pending")[1]["jobs"]:
        time.sleep(0.5)
    page.page.wait_for_timeout(2000)  # the queue panel refreshes on the last status message
    page.shot("job_queue_finished")
    finished = server.json("GET", "/api/jobs?status=completed&limit=10")[1]["jobs"]
    assert len(finished) >= 3 and all(j["preview_output"]["mediaType"] == "images" for j in finished[:3])
    problems = [c for c in page.console if any(w in c.lower() for w in ("schema", "zod", "validat", "invalid job"))]
    assert problems == [], problems
    assert page.unexpected_errors() == [], page.unexpected_errors()
    page.page.close()


def test_it_works_behind_the_sign_in(browser, tmp_path_factory, tiny_models):
    """With --auth-token, the official frontend runs after /login turned the token into the session cookie: its
    HTTP requests and its websocket are accepted, and the token itself is in no cookie."""
    token = "fe-tok-51c2a9"
    base = tmp_path_factory.mktemp("comfyui_frontend_auth")
    user = base / "user" / "default"
    user.mkdir(parents=True)
    (user / "comfy.settings.json").write_text(json.dumps({"Comfy.TutorialCompleted": True}))
    guarded = ServerProcess(base, ["--front-end", "comfyui", f"--auth-token={token}"], packs=(),
                            probe_query=f"?token={token}").start()
    try:
        page = Page(browser, guarded)
        page.page.goto(guarded.url + "/")
        page.page.wait_for_selector('input[name="token"]')
        page.page.fill('input[name="token"]', token)
        page.page.click('button[type="submit"]')
        page.page.wait_for_selector("#graph-canvas", timeout=60000)
        page.page.wait_for_function("() => window.app && window.app.extensionManager && "
                                    "window.comfyAPI.api.api.socket && window.comfyAPI.api.api.socket.readyState === 1",
                                    timeout=60000)
        page.page.wait_for_timeout(2000)
        assert page.unexpected_errors() == [], page.unexpected_errors()
        assert not [c for c in page.page.context.cookies() if token in c["value"]]
        page.shot("signed_in")
        page.page.close()
    finally:
        guarded.stop()
