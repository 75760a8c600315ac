"""Cache keys are input signatures: structure and literals, not node ids."""
from execution.cache_keys import KeyComputer, fingerprint_token
from execution.dynamic_graph import DynamicPrompt
from tests.conftest import make_catalogue

CAT = make_catalogue()


def keys_of(prompt, fingerprints=None):
    computer = KeyComputer(DynamicPrompt(prompt), CAT, (fingerprints or {}).get)
    return {nid: computer.key(nid) for nid in prompt}


def test_same_structure_different_ids_same_key():
    prompt = {"a": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
              "b": {"class_type": "IntMath", "inputs": {"a": ["a", 0], "b": 2, "operation": "add"}},
              "x": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
              "y": {"class_type": "IntMath", "inputs": {"operation": "add", "b": 2, "a": ["x", 0]}}}
    keys = keys_of(prompt)
    assert keys["a"] == keys["x"] and keys["b"] == keys["y"]


def test_literals_slots_and_upstream_change_the_key():
    base = {"a": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
            "b": {"class_type": "IntMath", "inputs": {"a": ["a", 0], "b": 2, "operation": "add"}}}
    k0 = keys_of(base)["b"]
    changed = {**base, "a": {"class_type": "PrimitiveInt", "inputs": {"value": 2}}}
    assert keys_of(changed)["b"] != k0
    literal = {**base, "b": {"class_type": "IntMath", "inputs": {"a": ["a", 0], "b": 3, "operation": "add"}}}
    assert keys_of(literal)["b"] != k0
    # a literal 1 and a float 1.0 are different inputs
    floaty = {**base, "b": {"class_type": "IntMath", "inputs": {"a": ["a", 0], "b": 2.0, "operation": "add"}}}
    assert keys_of(floaty)["b"] != k0


def test_not_idempotent_and_unique_id_nodes_keep_their_identity():
    prompt = {"c1": {"class_type": "V1Counter", "inputs": {"value": 1}},
              "c2": {"class_type": "V1Counter", "inputs": {"value": 1}},
              "w1": {"class_type": "V1WhoAmI", "inputs": {}},
              "w2": {"class_type": "V1WhoAmI", "inputs": {}}}
    keys = keys_of(prompt)
    assert keys["c1"] != keys["c2"] and keys["w1"] != keys["w2"]


def test_fingerprints_enter_the_key_and_nan_never_matches():
    prompt = {"c": {"class_type": "V1Changing", "inputs": {"value": 1}}}
    assert keys_of(prompt, {"c": "x"})["c"] != keys_of(prompt, {"c": "y"})["c"]
    assert keys_of(prompt, {"c": "x"})["c"] == keys_of(prompt, {"c": "x"})["c"]
    assert fingerprint_token(float("nan")) != fingerprint_token(float("nan"))
    assert fingerprint_token(5) == 5


def test_deep_chains_are_keyed_without_recursion():
    prompt = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 0}}}
    for i in range(1, 6000):
        prompt[str(i)] = {"class_type": "IntMath", "inputs": {"a": [str(i - 1), 0], "b": 1, "operation": "add"}}
    computer = KeyComputer(DynamicPrompt(prompt), CAT)
    assert len(computer.key("5999")) == 32 and len(computer.keys) == 6000


def test_a_node_shared_by_two_sources_is_keyed_before_either():
    """x reads c directly and through b: asked for x first, the keys must equal those computed bottom-up, and c's
    literal must reach x's key (a shared source digested late once fell back to its link's text)."""
    def diamond(value):
        return {"x": {"class_type": "IntMath", "inputs": {"a": ["c", 0], "b": ["b", 0], "operation": "add"}},
                "b": {"class_type": "IntMath", "inputs": {"a": ["c", 0], "b": 1, "operation": "add"}},
                "c": {"class_type": "PrimitiveInt", "inputs": {"value": value}}}
    top_down = KeyComputer(DynamicPrompt(diamond(1)), CAT)
    first_x = top_down.key("x")
    bottom_up = KeyComputer(DynamicPrompt(diamond(1)), CAT)
    for nid in ("c", "b", "x"):
        bottom_up.key(nid)
    assert first_x == bottom_up.keys["x"]
    assert KeyComputer(DynamicPrompt(diamond(2)), CAT).key("x") != first_x
