"""Previews passed to ProgressBar.update_absolute and set_progress reach the job's sink as PIL images."""
import uuid

import torch
from PIL import Image

import compat
from execution.caches import ClassicCache
from execution.events import RecordingSink
from execution.scheduler import Executor, Job
from graph.validation import validate_prompt
from nodes import builtin_catalogue
from nodes.v1_adapter import compile_v1


class Previewing:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"

    def run(self):
        import comfy.utils
        from comfy_api.latest import ComfyAPISync

        bar = comfy.utils.ProgressBar(2)
        bar.update_absolute(1, preview=("PNG", Image.new("RGB", (4, 4)), 256))
        ComfyAPISync().execution.set_progress(2, 2, preview_image=torch.rand(1, 6, 5, 3))
        return (2,)


def test_previews_reach_the_sink(bound):
    services, _ = bound
    catalogue = builtin_catalogue()
    catalogue.add(compile_v1(Previewing, "Previewing"))
    compat.install(services, catalogue)
    prompt = {"1": {"class_type": "Previewing", "inputs": {}},
              "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = validate_prompt(prompt, catalogue, None, services)
    job = Job(str(uuid.uuid4()), result.prompt, result.outputs, {}, result.order)
    sink = RecordingSink()
    outcome = Executor(catalogue, ClassicCache(), services).execute_sync(job, sink)
    assert outcome.status == "success", outcome.error
    assert [(e["value"], e["max"]) for e in sink.of("progress")] == [(1, 2), (2, 2)]
    (pid1, node1, img1, fmt1), (pid2, node2, img2, fmt2) = sink.previews
    assert (node1, fmt1, img1.size) == ("1", "PNG", (4, 4))
    assert (node2, fmt2, img2.size) == ("1", "JPEG", (5, 6))
