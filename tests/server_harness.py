"""Start the real server as a subprocess on a free loopback port, and talk to it with real HTTP/ws clients."""
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, base_dir, extra_args=(), packs=("server_pack",), port=None, probe_query=""):
        self.base_dir = str(base_dir)
        self.probe_query = probe_query  # e.g. "?token=..." for a server started with --auth-token
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        custom = os.path.join(self.base_dir, "custom_nodes")
        os.makedirs(custom, exist_ok=True)
        for pack in packs:
            src = os.path.join(FIXTURES, pack)
            dst = os.path.join(custom, os.path.basename(pack))
            if os.path.isdir(src) and not os.path.exists(dst):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
            elif os.path.isfile(src) and not os.path.exists(dst):
                shutil.copy(src, dst)

    def start(self, timeout=60):
        self.log = open(os.path.join(self.base_dir, f"server-{time.time_ns()}.log"), "wb")
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(self.port),
                                      "--base-directory", self.base_dir, *self.extra_args],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.read_log()}")
            try:
                urllib.request.urlopen(self.url + "/health" + self.probe_query, timeout=2).read()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.read_log()}")

    def read_log(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    # -- plain HTTP --------------------------------------------------------------------------------------------
    def request(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, response.read(), dict(response.headers)
        except urllib.error.HTTPError as err:
            return err.code, err.read(), dict(err.headers)

    def json(self, method, path, body=None, headers=None):
        status, data, _ = self.request(method, path, body, headers)
        return status, json.loads(data) if data else None

    def post_prompt(self, prompt, **fields):
        return self.json("POST", "/prompt", {"prompt": prompt, **fields})

    def wait_history(self, prompt_id, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, body = self.json("GET", f"/history/{prompt_id}")
            if body:
                return body[prompt_id]
            time.sleep(0.05)
        raise TimeoutError(f"job {prompt_id} did not finish")


async def collect_until_done(ws, prompt_id, timeout=30):
    """Messages until `executing {node: null}` for `prompt_id`: (json messages, binary frames)."""
    messages, binary = [], []
    deadline = time.time() + timeout
    while True:
        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.time()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            messages.append(data)
            if (data["type"] == "executing" and data["data"].get("node") is None
                    and data["data"].get("prompt_id") == prompt_id):
                return messages, binary
        elif msg.type == aiohttp.WSMsgType.BINARY:
            binary.append(msg.data)
        else:
            raise RuntimeError(f"websocket closed: {msg}")


async def collect_until_all_done(ws, prompt_ids, timeout=30):
    """Messages until every job in `prompt_ids` has sent `executing {node: null}`, in any order.

    With several workers jobs finish out of queue order, so waiting for them one by one could
    consume a later job's final message while waiting for an earlier one."""
    messages, binary, pending = [], [], set(prompt_ids)
    deadline = time.time() + timeout
    while pending:
        msg = await asyncio.wait_for(ws.receive(), max(0.1, deadline - time.time()))
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = json.loads(msg.data)
            messages.append(data)
            if data["type"] == "executing" and data["data"].get("node") is None:
                pending.discard(data["data"].get("prompt_id"))
        elif msg.type == aiohttp.WSMsgType.BINARY:
            binary.append(msg.data)
        else:
            raise RuntimeError(f"websocket closed: {msg}")
    return messages, binary


def simple_prompt(value=5):
    return {"1": {"class_type": "PrimitiveInt", "inputs": {"value": value}},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
