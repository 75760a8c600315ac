"""Run ComfyUI's own execution test suite (tests/execution: test_execution.py, test_async_nodes.py,
test_progress_isolation.py and their testing pack) against Tessera's server.

    python bench/comfyui_execution_suite.py COMFYUI_CHECKOUT [--deps DIR] [-- PYTEST_ARGS...]

COMFYUI_CHECKOUT is a ComfyUI source tree (the library's `fetch` of Comfy-Org/ComfyUI, extracted); its tests and
its client-side helpers (comfy_execution.graph_utils) are used as they are. --deps: a folder with what those need
and this environment lacks (`pip install --target DIR websocket-client`). The suite starts `python main.py
--output-directory ... --listen ... --port ... --extra-model-paths-config ... --cpu [--cache-lru N]`; here main.py
is a shim that starts Tessera's server.py with that command line and without the checkout on its path, so only the
test client is ComfyUI's. Prints pytest's summary (failures listed).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SHIM = '''"""Start Tessera's server with ComfyUI's command line."""
import os
import runpy
import sys

HIDDEN = {hidden!r}
sys.path = [p for p in sys.path if p not in ("", ".") and not any(p.startswith(h) for h in HIDDEN)]
sys.path.insert(0, {root!r})
os.environ.pop("PYTHONPATH", None)
sys.argv[0] = os.path.join({root!r}, "server.py")
runpy.run_path(sys.argv[0], run_name="__main__")
'''


def main(argv: list) -> int:
    extra = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    checkout = os.path.abspath(argv[0])
    deps = os.path.abspath(argv[argv.index("--deps") + 1]) if "--deps" in argv else None
    work = tempfile.mkdtemp(prefix="tessera_comfyui_suite_")
    os.makedirs(os.path.join(work, "tests"))
    shutil.copytree(os.path.join(checkout, "tests", "execution"), os.path.join(work, "tests", "execution"))
    for name in ("conftest.py", "__init__.py"):
        if os.path.exists(os.path.join(checkout, "tests", name)):
            shutil.copy(os.path.join(checkout, "tests", name), os.path.join(work, "tests", name))
    hidden = [checkout, work] + ([deps] if deps else [])
    with open(os.path.join(work, "main.py"), "w") as f:
        f.write(SHIM.format(hidden=hidden, root=ROOT))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([checkout] + ([deps] if deps else [])))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/execution", *extra]
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    for line in lines:
        if line.startswith(("FAILED", "ERROR")) or " passed" in line or " failed" in line:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
