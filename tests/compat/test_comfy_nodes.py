"""`import nodes` as packs use it: NODE_CLASS_MAPPINGS, MAX_RESOLUTION and V1-style wrappers of built-ins that run
inside the calling node's context."""
import uuid

import pytest
import torch

import compat
import nodes
from execution.caches import ClassicCache
from execution.context import current_context
from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from nodes import builtin_catalogue
from nodes.v1_adapter import compile_v1


def test_module_names(bound):
    assert nodes.MAX_RESOLUTION == 16384
    mappings = nodes.NODE_CLASS_MAPPINGS
    assert "IntMath" in mappings and "EmptyImage" in mappings
    assert nodes.IntMath is mappings["IntMath"] is nodes.NODE_CLASS_MAPPINGS["IntMath"]
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["IntMath"] == "Int Math"
    with pytest.raises(AttributeError):
        nodes.NoSuchNode  # noqa: B018
    from nodes import arithmetic, declare  # our own submodules still import normally
    assert arithmetic.IntMath.SPEC.name == "IntMath" and declare.MAX_RESOLUTION == 16384


def test_wrapper_class_shape(bound):
    services, catalogue = bound
    cls = nodes.IntMath
    entry = catalogue.object_info(services, "IntMath")["IntMath"]
    assert cls.INPUT_TYPES() == {"required": {k: tuple(v) for k, v in entry["input"]["required"].items()}}
    assert cls.RETURN_TYPES == ("INT",) and cls.FUNCTION == "execute" and cls.CATEGORY == "utils/math"
    assert cls.OUTPUT_NODE is False and nodes.PreviewAny.OUTPUT_NODE is True
    assert nodes.EmptyImage.FUNCTION == "generate"  # ComfyUI's method name, which runs the same as execute
    made = nodes.EmptyImage().generate(4, 2, 1, 0)[0]
    assert made.shape == (1, 2, 4, 3) and torch.equal(made, nodes.EmptyImage.execute(4, 2, 1, 0)[0])  # on the class too


def test_wrapper_execute_outside_a_job(bound):
    assert nodes.IntMath().execute(a=2, b=3, operation="add") == (5,)
    assert nodes.IntMath().execute(7, 2, "subtract") == (5,)  # positionals in input order
    image = nodes.EmptyImage().generate(width=4, height=2)[0]  # missing inputs take their declared defaults
    assert image.shape == (1, 2, 4, 3)
    with pytest.raises(TypeError):
        nodes.IntMath().execute(1, 2, "add", 4, 5)


def test_mappings_follow_the_bound_catalogue(bound, tmp_path):
    services, _ = bound

    class Extra:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        RETURN_TYPES = ("INT",)
        FUNCTION = "run"

        def run(self):
            return (1,)

    catalogue = builtin_catalogue()
    catalogue.add(compile_v1(Extra, "Extra"))
    compat.install(services, catalogue)
    assert nodes.NODE_CLASS_MAPPINGS["Extra"] is Extra  # pack classes are themselves, as in ComfyUI
    compat.install(services, builtin_catalogue())
    assert "Extra" not in nodes.NODE_CLASS_MAPPINGS


class CallsBuiltins:
    """A V1 node that calls built-in wrappers and records the context they ran in."""
    seen = []

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self, a):
        ctx = current_context()
        CallsBuiltins.seen.append((ctx.node_id, ctx.job_id))
        doubled = nodes.NODE_CLASS_MAPPINGS["IntMath"]().execute(a=a, b=2, operation="multiply")[0]
        return nodes.IntMath().execute(a=doubled, b=1, operation="add")


def test_wrapper_execute_inside_a_job(bound):
    services, _ = bound
    catalogue = builtin_catalogue()
    catalogue.add(compile_v1(CallsBuiltins, "CallsBuiltins"))
    compat.install(services, catalogue)
    prompt = {"1": {"class_type": "CallsBuiltins", "inputs": {"a": 20}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = validate_prompt(prompt, catalogue, None, services)
    assert result.ok, result.node_errors
    job = Job(str(uuid.uuid4()), result.prompt, result.outputs, {}, result.order)
    outcome = Executor(catalogue, ClassicCache(), services).execute_sync(job, RecordingSink())
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["2"]["text"] == ["41"]
    assert CallsBuiltins.seen[-1] == ("1", job.prompt_id)
