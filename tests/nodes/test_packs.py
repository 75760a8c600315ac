"""Loading custom node packs: packages with relative imports, single files, broken packs and broken classes,
display names, web directories, skipped names and module-name clashes."""
import logging
import os
import sys

import pytest

import nodes
from model_management.services import Services
from nodes import builtin_catalogue
from compat.packs import load_packs

PACKS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "packs")


@pytest.fixture
def services(tmp_path):
    return Services.for_directory(str(tmp_path / "base"))


def test_fixture_packs(services, caplog):
    catalogue = builtin_catalogue()
    builtin_count = len(catalogue)
    with caplog.at_level(logging.INFO, logger="compat.packs"):
        results = {r.name: r for r in load_packs([PACKS_DIR], catalogue, services)}
    assert set(results) == {"broken_pack", "good_pack", "v1_features_pack", "v3_extension_pack"}

    broken = results["broken_pack"]
    assert not broken.ok and broken.path == os.path.join(PACKS_DIR, "broken_pack.py")
    assert "Traceback" in broken.error and "RuntimeError: broken_pack fails on purpose" in broken.error
    assert any("broken_pack fails on purpose" in r.getMessage() and r.levelno == logging.ERROR
               for r in caplog.records)

    good = results["good_pack"]
    assert good.ok and good.error is None and good.node_names == ["GoodTriple"]
    assert set(good.class_errors) == {"GoodBrokenClass", "IntMath"}  # skipped alone; the built-in keeps its name
    assert "missing RETURN_TYPES" in good.class_errors["GoodBrokenClass"]
    assert good.web_directory == os.path.join(PACKS_DIR, "good_pack", "js")
    assert os.path.isfile(os.path.join(good.web_directory, "good_pack.js"))
    assert catalogue.get("IntMath").source is not sys.modules["good_pack"].IntMath

    features = results["v1_features_pack"]
    assert features.ok and "FeatRepeatAdd" in features.node_names and features.web_directory is None
    v3 = results["v3_extension_pack"]
    assert v3.ok and len(v3.node_names) == 6
    assert len(catalogue) == builtin_count + 1 + len(features.node_names) + len(v3.node_names)

    info = catalogue.object_info(services)
    assert info["GoodTriple"]["display_name"] == "Triple (good pack)"
    assert info["GoodTriple"]["python_module"] == "custom_nodes.good_pack"
    assert info["FeatRepeatAdd"]["display_name"] == "Repeat Add (features)"
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["GoodTriple"] == "Triple (good pack)"
    assert nodes.NODE_CLASS_MAPPINGS["GoodTriple"] is sys.modules["good_pack"].GoodTriple


def test_relative_import_resolves_inside_the_pack(services):
    catalogue = builtin_catalogue()
    load_packs(PACKS_DIR, catalogue, services)
    assert sys.modules["good_pack.helpers"].triple(2) == 6
    assert sys.modules["good_pack"].GoodTriple().run(5) == (15,)


def test_disabled_loads_nothing(services):
    catalogue = builtin_catalogue()
    assert load_packs([PACKS_DIR], catalogue, services, disabled=True) == []
    assert "GoodTriple" not in catalogue


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


NODE = '''
class {name}:
    @classmethod
    def INPUT_TYPES(cls):
        return {{"required": {{}}}}
    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    def run(self):
        return ({value},)
NODE_CLASS_MAPPINGS = {{"{name}": {name}}}
'''


def test_skipped_names_and_missing_folders(services, tmp_path):
    packs = tmp_path / "custom_nodes"
    write(str(packs / "kept.py"), NODE.format(name="KeptNode", value=1))
    write(str(packs / "old.py.disabled"), NODE.format(name="OldNode", value=2))
    write(str(packs / "gone.disabled" / "__init__.py"), NODE.format(name="GoneNode", value=3))
    write(str(packs / ".hidden" / "__init__.py"), NODE.format(name="HiddenNode", value=4))
    write(str(packs / "__pycache__" / "x.py"), NODE.format(name="CacheNode", value=5))
    write(str(packs / "not_a_package" / "module.py"), NODE.format(name="LooseNode", value=6))
    write(str(packs / "readme.txt"), "not python")
    catalogue = builtin_catalogue()
    results = load_packs([str(packs), str(tmp_path / "does_not_exist")], catalogue, services)
    assert [r.name for r in results] == ["kept"]
    assert "KeptNode" in catalogue and "OldNode" not in catalogue and "GoneNode" not in catalogue


def test_pack_named_like_an_engine_module_does_not_replace_it(services, tmp_path):
    packs = tmp_path / "custom_nodes"
    write(str(packs / "graph" / "__init__.py"), "from .impl import *\n")
    write(str(packs / "graph" / "impl.py"), NODE.format(name="ClashNode", value=7))
    import graph
    catalogue = builtin_catalogue()
    (result,) = load_packs([str(packs)], catalogue, services)
    assert result.ok and result.node_names == ["ClashNode"] and result.module_name != "graph"
    assert sys.modules["graph"] is graph
    assert catalogue.get("ClashNode").source().run() == (7,)


def test_pack_without_mappings_and_pack_that_exits(services, tmp_path):
    packs = tmp_path / "custom_nodes"
    write(str(packs / "empty_pack.py"), "X = 1\n")
    write(str(packs / "exits_pack.py"), "import sys\nsys.exit(3)\n")
    write(str(packs / "later_pack.py"), NODE.format(name="LaterNode", value=8))
    catalogue = builtin_catalogue()
    results = {r.name: r for r in load_packs([str(packs)], catalogue, services)}
    assert not results["empty_pack"].ok and "NODE_CLASS_MAPPINGS" in results["empty_pack"].error
    assert not results["exits_pack"].ok and "SystemExit" in results["exits_pack"].error
    assert results["later_pack"].ok and "LaterNode" in catalogue
    assert "exits_pack" not in sys.modules
