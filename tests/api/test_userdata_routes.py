"""/users, /settings, /userdata and /v2/userdata on a real server, with ComfyUI's payloads and status codes; paths
stay inside the user's folder; the multi-user mode keeps users apart."""
import json
import os
import urllib.parse

import pytest

from tests.server_harness import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("userdata"), packs=()).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("multi"), ["--multi-user"], packs=()).start()
    yield srv
    srv.stop()


def enc(name):
    return urllib.parse.quote(name, safe="")


def test_single_user_and_settings(server):
    status, body = server.json("GET", "/api/users")
    assert status == 200 and body["storage"] == "server" and "migrated" in body
    assert server.json("GET", "/api/settings") == (200, {})
    assert server.request("POST", "/api/settings/Comfy.ColorPalette", body="light")[0] == 200
    assert server.request("POST", "/api/settings", body={"Comfy.Locale": "en", "A.Number": 3})[0] == 200
    assert server.json("GET", "/api/settings") == (200, {"Comfy.ColorPalette": "light", "Comfy.Locale": "en",
                                                         "A.Number": 3})
    assert server.json("GET", "/api/settings/A.Number") == (200, 3)
    assert server.json("GET", "/api/settings/Missing") == (200, None)
    path = os.path.join(server.base_dir, "user", "default", "comfy.settings.json")
    with open(path, encoding="utf-8") as f:
        assert json.load(f)["Comfy.Locale"] == "en"  # where ComfyUI keeps them
    assert server.request("POST", "/api/settings", raw=b"{not json")[0] == 400
    assert server.json("POST", "/api/users", {"username": "x"})[0] == 400  # single-user server


def test_userdata_save_list_open_move_delete(server):
    workflow = json.dumps({"nodes": [], "links": []}).encode()
    status, data, _ = server.request("POST", f"/api/userdata/{enc('workflows/my flow.json')}", raw=workflow)
    assert status == 200 and json.loads(data) == "workflows/my flow.json"
    status, data, _ = server.request("POST", f"/api/userdata/{enc('workflows/my flow.json')}?overwrite=false",
                                     raw=workflow)
    assert status == 409
    status, data, _ = server.request("POST", f"/api/userdata/{enc('workflows/sub/b.json')}?full_info=true",
                                     raw=b"{}")
    info = json.loads(data)
    assert status == 200 and info["path"] == "workflows/sub/b.json" and info["size"] == 2 and "modified" in info
    assert server.json("GET", "/api/userdata?dir=workflows") == (200, ["my flow.json"])
    assert server.json("GET", "/api/userdata?dir=workflows&recurse=true") == (200, ["my flow.json", "sub/b.json"])
    status, split = server.json("GET", "/api/userdata?dir=workflows&recurse=true&split=true")
    assert split == [["my flow.json", "my flow.json"], ["sub/b.json", "sub", "b.json"]]
    status, full = server.json("GET", "/api/userdata?dir=workflows&full_info=true")
    assert [f["path"] for f in full] == ["my flow.json"] and full[0]["size"] == len(workflow)
    status, data, headers = server.request("GET", f"/api/userdata/{enc('workflows/my flow.json')}")
    assert status == 200 and data == workflow and headers.get("X-Content-Type-Options") == "nosniff"
    status, data, _ = server.request(
        "POST", f"/api/userdata/{enc('workflows/my flow.json')}/move/{enc('workflows/renamed.json')}")
    assert status == 200 and json.loads(data) == "workflows/renamed.json"
    assert server.json("GET", "/api/userdata?dir=workflows") == (200, ["renamed.json"])
    status, tree = server.json("GET", "/api/v2/userdata?path=workflows")
    assert [(e["name"], e["type"]) for e in tree] == [("sub", "directory"), ("b.json", "file"),
                                                      ("renamed.json", "file")]
    assert server.request("DELETE", f"/api/userdata/{enc('workflows/renamed.json')}")[0] == 204
    assert server.request("DELETE", f"/api/userdata/{enc('workflows/renamed.json')}")[0] == 404
    assert server.request("GET", "/api/userdata?dir=nothing_here")[0] == 404
    assert server.request("GET", "/api/userdata")[0] == 400
    # the path without /api works too (ComfyUI serves both)
    assert server.json("GET", "/userdata?dir=workflows") == (200, [])


def test_paths_stay_inside_the_users_folder(server):
    outside = os.path.join(server.base_dir, "user", "secret.txt")
    with open(outside, "w") as f:
        f.write("not yours")
    for name in ("../secret.txt", "../../user/secret.txt", "/etc/passwd", "..%2Fsecret.txt"):
        status = server.request("GET", f"/api/userdata/{enc(name)}")[0]
        assert status in (403, 404), name
        assert server.request("POST", f"/api/userdata/{enc(name)}", raw=b"x")[0] == 403, name
    assert server.request("GET", f"/api/userdata?dir={enc('../')}")[0] == 403
    assert server.request("GET", f"/api/v2/userdata?path={enc('../..')}")[0] == 400
    with open(outside) as f:
        assert f.read() == "not yours"
    # the job database next to the users' folders is never reachable
    assert server.request("GET", f"/api/userdata/{enc('../tessera.db')}")[0] in (403, 404)


def test_multi_user_mode_keeps_users_apart(multi):
    status, body = multi.json("GET", "/api/users")
    assert status == 200 and body == {"storage": "server", "users": {}}
    assert multi.request("GET", "/api/settings")[0] == 403  # "default" is not a user here
    status, alice = multi.json("POST", "/api/users", {"username": "Alice Smith"})
    assert status == 200 and alice.startswith("Alice-Smith_")
    assert multi.json("POST", "/api/users", {"username": "Alice Smith"})[0] == 400  # duplicate name
    status, bob = multi.json("POST", "/api/users", {"username": "bob"})
    assert multi.json("GET", "/api/users")[1]["users"] == {alice: "Alice Smith", bob: "bob"}
    multi.request("POST", "/api/settings/Theme", body="dark", headers={"comfy-user": alice})
    assert multi.json("GET", "/api/settings", headers={"comfy-user": alice}) == (200, {"Theme": "dark"})
    assert multi.json("GET", "/api/settings", headers={"comfy-user": bob}) == (200, {})
    multi.request("POST", f"/api/userdata/{enc('workflows/a.json')}", raw=b"{}", headers={"comfy-user": alice})
    assert multi.json("GET", "/api/userdata?dir=workflows", headers={"comfy-user": alice}) == (200, ["a.json"])
    assert multi.request("GET", "/api/userdata?dir=workflows", headers={"comfy-user": bob})[0] == 404
    for bad in ("nobody", "../x", alice + "/.."):
        assert multi.request("GET", "/api/settings", headers={"comfy-user": bad})[0] == 403, bad
