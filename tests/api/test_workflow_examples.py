"""GET /workflow_examples and /workflow_examples/{name}: the editor's examples menu reads workflows/ through these."""
import json
import os

import pytest

from tests.server_harness import ROOT, ServerProcess

WORKFLOWS = os.path.join(ROOT, "workflows")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("examples"), packs=()).start()
    yield srv
    srv.stop()


def test_list_names_every_example_once(server):
    status, names = server.json("GET", "/workflow_examples")
    assert status == 200
    expected = sorted({f.split(".")[0] for f in os.listdir(WORKFLOWS) if f.endswith(".json")})
    assert names == expected
    assert "txt2img" in names and "sdxl_base_refiner" in names
    assert server.json("GET", "/api/workflow_examples") == (200, names)


def test_example_is_the_ui_format_file(server):
    status, body = server.json("GET", "/workflow_examples/txt2img")
    assert status == 200
    with open(os.path.join(WORKFLOWS, "txt2img.json")) as f:
        assert body == json.load(f)
    assert isinstance(body["nodes"], list) and isinstance(body["links"], list)
    # a trailing .json is accepted too
    assert server.json("GET", "/workflow_examples/txt2img.json") == (200, body)


def test_unknown_example_is_404(server):
    status, body = server.json("GET", "/workflow_examples/no_such_example")
    assert status == 404
    assert "no_such_example" in body["error"]["message"]


@pytest.mark.parametrize("name", ["..%2Fserver.py", "..%2F..%2Fetc%2Fpasswd", ".hidden", "txt2img.api",
                                  "%2Fetc%2Fpasswd", "a%00b"])
def test_names_that_could_leave_the_folder_are_refused(server, name):
    status, body = server.json("GET", f"/workflow_examples/{name}")
    assert status in (400, 404)
    assert "error" in body and "nodes" not in body


def test_traversal_with_plain_dots_never_serves_a_file(server):
    status, data, _ = server.request("GET", "/workflow_examples/../server.py")
    assert status == 404
    assert b"argparse" not in data
