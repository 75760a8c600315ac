"""The server as a user starts it: a real subprocess on a free loopback port, real HTTP."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


@pytest.fixture(scope="module")
def server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "server.py", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            get(base + "/health")
            break
        except (urllib.error.URLError, ConnectionError):
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(10)


def test_health_bare_and_under_api(server):
    for path in ("/health", "/api/health"):
        status, body = get(server + path)
        assert status == 200 and body["status"] == "ok" and body["nodes"] > 10


def test_object_info(server):
    status, info = get(server + "/object_info")
    assert status == 200 and "IntMath" in info
    assert info["IntMath"]["input_order"]["required"] == ["a", "b", "operation"]
    status, one = get(server + "/api/object_info/EmptyImage")
    assert list(one) == ["EmptyImage"]
    with pytest.raises(urllib.error.HTTPError) as err:
        get(server + "/object_info/Nope")
    assert err.value.code == 404


def test_refuses_non_loopback_without_auth():
    result = subprocess.run([sys.executable, "server.py", "--listen", "0.0.0.0", "--port", str(free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "refusing" in result.stderr
