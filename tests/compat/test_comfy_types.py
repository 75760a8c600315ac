"""comfy.comfy_types, comfy_execution and comfy_api.latest: the names packs import resolve to working objects."""
import asyncio
import contextvars

import pytest


def test_io_types(bound):
    from comfy.comfy_types import IO
    from comfy.comfy_types.node_typing import IO as IO2

    assert IO is IO2
    assert IO.INT == "INT" and type(IO.INT) is str and str(IO.IMAGE) == "IMAGE"
    assert not (IO.ANY != "IMAGE") and not (IO.ANY != "LATENT,MASK") and IO.ANY == "*"
    assert IO("MODEL") == "MODEL" and IO["VAE"] == "VAE" and "CLIP" in IO and "*" in list(IO)
    with pytest.raises(ValueError):
        IO("NOT_A_TYPE")
    assert IO.NUMBER == "FLOAT,INT"


def test_node_abc_and_lazy_mixin(bound):
    from comfy.comfy_types import CheckLazyMixin, ComfyNodeABC, FileLocator, InputTypeDict

    class Missing(ComfyNodeABC):
        pass

    with pytest.raises(TypeError):
        Missing()

    class Lazy(ComfyNodeABC, CheckLazyMixin):
        @classmethod
        def INPUT_TYPES(cls) -> InputTypeDict:
            return {"required": {"a": ("INT", {"lazy": True}), "b": ("INT", {"lazy": True}), "c": ("INT",)}}

    assert Lazy().check_lazy_status(a=None, b=3, c=None) == ["a"]
    assert FileLocator(filename="a.png", subfolder="", type="output")["type"] == "output"


def test_execution_modules_reexport_the_engine(bound):
    import comfy_execution.graph as cg
    import comfy_execution.graph_utils as gu
    from execution.blocker import ExecutionBlocker
    from execution.dynamic_graph import DynamicPrompt
    from execution.graph_builder import GraphBuilder

    assert gu.GraphBuilder is GraphBuilder and cg.ExecutionBlocker is ExecutionBlocker
    assert cg.DynamicPrompt is DynamicPrompt
    def build():  # in a copied context, so the default prefix set here does not leak into later tests
        GraphBuilder.set_default_prefix("9", 0)
        return gu.GraphBuilder()

    builder = contextvars.copy_context().run(build)
    assert builder.prefix == "9.0.0." and gu.is_link(builder.node("IntMath").out(0))
    graph, outputs = gu.add_graph_prefix({"1": {"class_type": "X", "inputs": {"v": ["2", 0]}}}, (["1", 0], 5), "p.")
    assert graph == {"p.1": {"class_type": "X", "inputs": {"v": ["p.2", 0]}}} and outputs == (["p.1", 0], 5)

    class Node:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {"min": 0}), "c": (["a", "b"],)}, "hidden": {"u": "UNIQUE_ID"}}

    assert cg.get_input_info(Node, "x") == ("INT", "required", {"min": 0})
    assert cg.get_input_info(Node, "c") == ("COMBO", "required", None)
    assert cg.get_input_info(Node, "u") == ("UNIQUE_ID", "hidden", None)
    assert cg.get_input_info(Node, "nope") == (None, None, None)


def test_comfy_api_outside_a_job_is_harmless(bound, engine_with_recorder):
    """Outside a node call set_progress reports to nothing: no exception (even with a preview), and a job that
    ran before gets no stray event."""
    import torch
    from comfy_api.latest import ComfyAPI, ComfyAPISync
    from compat import _report

    sink = engine_with_recorder()
    before = list(sink.events)
    assert _report.context_for() is None and _report.context_for("1") is None
    assert ComfyAPISync().execution.set_progress(1, 2, preview_image=torch.rand(1, 8, 8, 3)) is None
    assert asyncio.run(ComfyAPI().execution.set_progress(1, 2, node_id="1")) is None
    assert sink.events == before


@pytest.fixture
def engine_with_recorder():
    """Runs one small job and returns its sink: a job that is over."""
    from tests.conftest import Engine

    def run():
        engine = Engine()
        prompt = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
                  "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
        outcome, sink = engine.run(prompt)
        assert outcome.status == "success" and sink.events
        return sink
    return run
