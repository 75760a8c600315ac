"""Browser helpers shared by the editor tests and bench/editor.py: launching Debian's chromium, real mouse drags,
widget input, and filtering the console problems a page collected."""
import os

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "artifacts")


def chromium_args():
    args = ["--disable-background-networking", "--disable-dev-shm-usage"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--no-sandbox")  # chromium refuses to run its sandbox as root
    return args


def launch_chromium(playwright, headless=True):
    """Debian's chromium through Playwright: executable_path, so Playwright never looks for its own download."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=chromium_args(), headless=headless)


def node_locator(page, node_id):
    return page.locator(f'#graph-canvas .node[data-id="{node_id}"]')


def drag(page, source, target, steps=12):
    """Drag with real mouse events from the centre of one element to the centre of another."""
    a = source.bounding_box()
    b = target.bounding_box()
    assert a and b, "both ends of the drag must be visible"
    page.mouse.move(a["x"] + a["width"] / 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] / 2, b["y"] + b["height"] / 2, steps=steps)
    page.mouse.up()


def set_widget(page, node_id, name, value):
    """Type a value into a node's widget (number/text input, textarea or select)."""
    widget = node_locator(page, node_id).locator(f'.widget[data-name="{name}"]')
    control = widget.locator("input, textarea, select").first
    tag = control.evaluate("el => el.tagName")
    if tag == "SELECT":
        control.select_option(str(value))
    else:
        control.fill(str(value))
        control.press("Tab")
    return control


def serious_problems(page):
    """Console errors and page errors that are not the test pack's deliberate failures or expected HTTP errors."""
    ignored = ("/extensions/web_compat_pack/", "broken on purpose", "failed on purpose",
               "Failed to load resource", "a timer in an extension failed")
    return [p for p in page.problems if not any(marker in p for marker in ignored)]
