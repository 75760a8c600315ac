"""A custom node pack whose JS was written for the ComfyUI frontend (settings, canvas, menu and widget APIs we lack,
a module we do not ship, a script that throws while importing, a hook and a timer that throw): the editor loads,
runs the hooks it can, skips what fails, and keeps working."""
from tests.web.helpers import drag, node_locator, serious_problems

PACK = "/extensions/web_compat_pack/"


def test_pack_js_that_calls_missing_apis_does_not_break_the_editor(page):
    results = {r["url"]: r for r in page.evaluate("window.tessera.extensionResults")}
    assert {url: r["ok"] for url, r in results.items()} == {
        PACK + "imports_missing_module.js": False,
        PACK + "nested/deeper.js": True,
        PACK + "throws_in_hook.js": True,
        PACK + "throws_on_import.js": False,
        PACK + "uses_missing_apis.js": True,
    }
    assert "broken on purpose" in results[PACK + "throws_on_import.js"]["error"]

    seen = page.evaluate("window.__compatPack")
    catalogue_size = page.evaluate("Object.keys(window.tessera.catalogue).length")
    assert seen["init"] == 1 and seen["setup"] == 1
    assert seen["beforeRegister"] == catalogue_size and seen["ownType"]
    assert seen["settingWasNoop"], "an unknown API hands back a callable no-op"
    assert page.evaluate("window.__compatPackNested") is True
    assert page.evaluate("window.__compatPackElement.outerHTML") == \
        '<div class="compat-pack" id="compat-pack-el">made by $el</div>'

    # the failures were recorded, not thrown at the editor
    page.wait_for_function("window.tessera.extensionErrors.some(e => e.phase === 'runtime')")
    errors = page.evaluate("window.tessera.extensionErrors")
    assert any(e.get("hook") == "setup" and "on purpose" in e["message"] for e in errors)
    assert any(e.get("phase") == "import" and "imports_missing_module" in e["url"] for e in errors)
    page.shot("editor-with-pack")

    # the editor still works: the pack's own node gets its hooks, nodes can be added and wired
    page.mouse.dblclick(200, 200)
    page.fill("#node-search input", "compat echo")
    page.locator('.search-result[data-type="CompatEcho"]').click()
    echo = page.locator('.node[data-type="CompatEcho"]')
    echo.wait_for()
    page.wait_for_function("window.__compatPack.nodeCreated === 1 && window.__compatPack.onNodeCreated === 1")
    page.mouse.dblclick(650, 200)
    page.fill("#node-search input", "preview as text")
    page.locator('.search-result[data-type="PreviewAny"]').first.click()
    preview = page.locator('.node[data-type="PreviewAny"]')
    preview.wait_for()
    drag(page, echo.locator('.slot.output[data-index="0"] .dot'), preview.locator(".slot.input .dot").first)
    assert page.locator("path.link").count() == 1
    echo_id = echo.get_attribute("data-id")
    prompt = page.evaluate("window.tessera.toApiPrompt().prompt")
    assert prompt[preview.get_attribute("data-id")]["inputs"]["source"] == [echo_id, 0]

    # and runs it: PreviewAny's executed event reaches the pack's api listener through the shared client
    page.click("#queue-button")
    page.wait_for_function("window.__compatPack.executedEvents >= 1", timeout=30000)
    page.wait_for_function("window.__compatPack.executingDetails.includes(null)", timeout=30000)
    details = page.evaluate("window.__compatPack.executingDetails")
    assert echo_id in details and details[-1] is None, details
    assert "has-error" not in node_locator(page, echo_id).get_attribute("class")
    page.shot("pack-node-ran")
    assert not serious_problems(page), page.problems
