"""ComfyUI execution semantics that its own test suite checks, on V1 classes run by our validator and scheduler:
linked inputs reach VALIDATE_INPUTS as None when it names them, hidden inputs of a custom type take their value
from the prompt, a class without FUNCTION fails only when run."""
from nodes.v1_adapter import compile_v1


class SeesLinks:
    seen = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0, "min": 0, "max": 10}), "b": ("INT", {"default": 0})},
                "hidden": {"uid": "UNIQUE_ID"}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def VALIDATE_INPUTS(cls, a, b, uid):
        cls.seen.append((a, b, uid))
        return True if b is None or b < 100 else "b too big"

    def run(self, a, b, uid):
        return (a + b,)


class HiddenCustom:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"default": 1})}, "hidden": {"extra": ("*",), "node": "UNIQUE_ID"}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, x, extra=None, node=None):
        return (f"{x}:{extra}:{node}",)


def _add(engine, cls):
    engine.catalogue.add(compile_v1(cls, cls.__name__))


def test_validate_inputs_gets_linked_inputs_as_none_and_skips_their_checks(engine):
    _add(engine, SeesLinks)
    SeesLinks.seen.clear()
    prompt = {"src": {"class_type": "PrimitiveInt", "inputs": {"value": 500}},
              "n": {"class_type": "SeesLinks", "inputs": {"a": 50, "b": ["src", 0]}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}
    outcome, _ = engine.run(prompt)  # a=50 is beyond max=10, but VALIDATE_INPUTS claims `a`
    assert outcome.status == "success", outcome.error
    assert SeesLinks.seen == [(50, None, "n")]  # b linked -> None; the hidden UNIQUE_ID is the node id
    assert outcome.outputs["show"]["text"] == ["550"]
    bad = {"n": {"class_type": "SeesLinks", "inputs": {"a": 1, "b": 100}},
           "show": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}}
    errors = engine.validate(bad).node_errors["n"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed" and "b too big" in errors[0]["details"]


def test_hidden_input_of_a_custom_type_comes_from_the_prompt(engine):
    _add(engine, HiddenCustom)
    prompt = {"h": {"class_type": "HiddenCustom", "inputs": {"x": 3, "extra": "from-the-prompt"}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["h", 0]}}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["show"]["text"] == ["3:from-the-prompt:h"]
    outcome, _ = engine.run({"h": {"class_type": "HiddenCustom", "inputs": {"x": 4}},
                             "show": {"class_type": "PreviewAny", "inputs": {"source": ["h", 0]}}})
    assert outcome.outputs["show"]["text"] == ["4:None:h"]  # not given: not passed (the default applies)


class _ClaimsEverything(dict):
    """An optional section that answers `in` for any name, as rgthree's FlexibleOptionalInputType does."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return ("*",)


class FlexibleSum:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"base": ("INT", {"default": 0})}, "optional": _ClaimsEverything()}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    def run(self, base, **extra):
        return (f"{base}+{sorted(extra.items())}",)


def test_undeclared_inputs_reach_a_node_whose_optional_section_claims_every_name(engine):
    _add(engine, FlexibleSum)
    prompt = {"one": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
              "f": {"class_type": "FlexibleSum", "inputs": {"base": 2, "lora_1": {"on": True, "strength": 0.5},
                                                            "linked": ["one", 0]}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["f", 0]}}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["show"]["text"] == ["2+[('linked', 1), ('lora_1', {'on': True, 'strength': 0.5})]"]
    _add(engine, SeesLinks)  # an ordinary class does not get undeclared literals
    outcome, _ = engine.run({"n": {"class_type": "SeesLinks", "inputs": {"a": 1, "b": 2, "stray": 5}},
                             "show": {"class_type": "PreviewAny", "inputs": {"source": ["n", 0]}}})
    assert outcome.status == "success" and outcome.outputs["show"]["text"] == ["3"]


class ChangedByConstants:
    calls = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True}), "scale": ("INT", {"default": 2})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    @classmethod
    def IS_CHANGED(cls, x, scale):
        cls.calls.append((x, scale))
        return scale if x is None else x * scale  # ComfyUI gives IS_CHANGED constants only: x is None

    def run(self, x, scale):
        return (x * scale,)


def test_is_changed_gets_linked_inputs_as_none_so_a_repeat_is_cached(engine):
    _add(engine, ChangedByConstants)
    ChangedByConstants.calls.clear()
    prompt = {"src": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
              "c": {"class_type": "ChangedByConstants", "inputs": {"x": ["src", 0], "scale": 3}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["c", 0]}}}
    first, _ = engine.run(prompt)
    second, _ = engine.run(prompt)
    assert first.outputs["show"]["text"] == ["15"]
    assert ChangedByConstants.calls == [(None, 3), (None, 3)]
    assert "c" in first.executed and "c" not in second.executed


def test_a_hidden_input_of_a_custom_type_may_be_linked(engine):
    """ComfyUI's for-loop test nodes feed a hidden ("*",) input from a link when they expand."""
    _add(engine, HiddenCustom)
    assert engine.catalogue.get("HiddenCustom").to_catalogue()["input"]["hidden"] == {"extra": ["*"],
                                                                                   "node": "UNIQUE_ID"}
    prompt = {"src": {"class_type": "PrimitiveString", "inputs": {"value": "linked-value"}},
              "h": {"class_type": "HiddenCustom", "inputs": {"x": 1, "extra": ["src", 0]}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["h", 0]}}}
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["show"]["text"] == ["1:linked-value:h"]


def test_is_changed_counts_for_nodes_reached_only_through_raw_links(engine):
    """ComfyUI's for-loop nodes take their inputs as raw links and expand; a NaN IS_CHANGED upstream of them must
    still re-run every time."""
    class AlwaysChanged:
        runs = 0

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT", {"default": 1})}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        @classmethod
        def IS_CHANGED(cls, value):
            return float("nan")

        def run(self, value):
            AlwaysChanged.runs += 1
            return (value,)

    class RawPassThrough:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"source": ("INT", {"rawLink": True})}}
        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self, source):
            from comfy_execution.graph_utils import GraphBuilder
            graph = GraphBuilder()
            node = graph.node("IntMath", a=source, b=0, operation="add")
            return {"result": (node.out(0),), "expand": graph.finalize()}

    import compat
    compat.install(None, engine.catalogue)
    engine.catalogue.add(compile_v1(AlwaysChanged, "AlwaysChanged"))
    engine.catalogue.add(compile_v1(RawPassThrough, "RawPassThrough"))
    prompt = {"a": {"class_type": "AlwaysChanged", "inputs": {"value": 4}},
              "r": {"class_type": "RawPassThrough", "inputs": {"source": ["a", 0]}},
              "show": {"class_type": "PreviewAny", "inputs": {"source": ["r", 0]}}}
    for expected in (1, 2):
        outcome, _ = engine.run(prompt)
        assert outcome.status == "success", outcome.error
        assert outcome.outputs["show"]["text"] == ["4"] and AlwaysChanged.runs == expected
