"""Every built-in node documents itself: a description, a tooltip on each input and on each output, and the
interface of every node that nodes-reference.json lists matches it (names, order, types, outputs)."""
import pytest

from model_management.services import Services
from nodes import builtin_catalogue
from tests.reference import load_reference



@pytest.fixture(scope="module")
def info(tmp_path_factory):
    services = Services.for_directory(str(tmp_path_factory.mktemp("catalogue")))
    return builtin_catalogue().object_info(services)


def test_every_node_has_a_description_and_tooltips(info):
    missing = []
    for name, entry in info.items():
        if not (entry.get("description") or "").strip():
            missing.append(f"{name}: description")
        for section in ("required", "optional"):
            for input_name, spec in entry["input"].get(section, {}).items():
                options = spec[1] if len(spec) > 1 else {}
                if not (options.get("tooltip") or "").strip():
                    missing.append(f"{name}.{input_name}: tooltip")
        tips = entry.get("output_tooltips") or []
        if len(tips) != len(entry["output"]) or not all(tips):
            missing.append(f"{name}: output tooltips {tips}")
    assert not missing, "\n".join(missing)


def test_every_reference_node_exists_with_its_interface(info):
    reference = load_reference()
    problems = []
    for name, ref in reference.items():
        entry = info.get(name)
        if entry is None:
            problems.append(f"{name}: missing")
            continue
        if entry["input_order"] != ref["input_order"]:
            problems.append(f"{name}: input order {entry['input_order']} != {ref['input_order']}")
        for section, inputs in ref["input"].items():
            for input_name, spec in inputs.items():
                ours = entry["input"].get(section, {}).get(input_name)
                if ours is None:
                    problems.append(f"{name}.{input_name}: missing in {section}")
                    continue
                ref_type, our_type = spec[0], ours[0]
                if ref_type == "COMBO" or isinstance(ref_type, list) or str(ref_type).startswith("FILES:"):
                    # combos: file lists are ours to fill; fixed choices may be a subset (what we implement)
                    if not isinstance(our_type, list):
                        problems.append(f"{name}.{input_name}: {our_type} is not a combo")
                    elif isinstance(ref_type, list) and not set(our_type) <= set(ref_type):
                        problems.append(f"{name}.{input_name}: choices {sorted(set(our_type) - set(ref_type))} "
                                        f"are not in the reference")
                elif our_type != ref_type:
                    problems.append(f"{name}.{input_name}: type {our_type} != {ref_type}")
        if list(entry["output"]) != list(ref["output"]):
            problems.append(f"{name}: outputs {entry['output']} != {ref['output']}")
    assert not problems, "\n".join(problems)
