"""SkipLayerGuidanceSD3 / SkipLayerGuidanceDiT: within the chosen part of the schedule each step adds
(cond - cond with blocks skipped) * scale, the blocks skipped through the DiT block-replacement hook; outside it,
and with no layer named, the result is the plain one."""
import os

import numpy as np
import torch

from nodes.skip_layer_guidance import SkipLayerGuidanceDiT, SkipLayerGuidanceSD3, _skip
from tests.nodes.test_flux_nodes import checkpoint_prompt as flux_checkpoint_prompt
from tests.nodes.test_flux_nodes import engine as flux_engine  # noqa: F401 (fixture)
from tests.nodes.test_sd3_nodes import checkpoint_prompt, engine, image  # noqa: F401 (fixture)


def test_a_skipped_block_is_the_identity_inside_the_mmdit(tiny_models):
    from model_management.checkpoints import load_checkpoint
    loaded = load_checkpoint(tiny_models.sd3("checkpoint"), want_clip=False, want_vae=False)
    net = loaded.model.unet
    torch.manual_seed(0)
    x, ctx, y, t = torch.randn(1, 16, 8, 8), torch.randn(1, 7, 256), torch.randn(1, 192), torch.tensor([500.0])
    seen = []

    def spy(args, extra):
        seen.append(sorted(args))
        return extra["original_block"](args)
    with torch.no_grad():
        plain = net(x, t, ctx, y=y)
        through = net(x, t, ctx, y=y, transformer_options={"patches_replace": {"dit": {("double_block", 0): spy}}})
        skipped = net(x, t, ctx, y=y, transformer_options={"patches_replace": {"dit": {("double_block", 0): _skip}}})
    assert seen == [["img", "txt", "vec"]] and torch.equal(through, plain)
    assert (skipped - plain).abs().max() > 1e-3


def test_sd3_workflow_changes_only_inside_the_window(engine):  # noqa: F811
    plain, _ = engine.run(checkpoint_prompt(steps=4))
    assert plain.status == "success", plain.error

    def with_slg(start, end, layers="0"):
        prompt = checkpoint_prompt(steps=4)
        prompt["slg"] = {"class_type": "SkipLayerGuidanceSD3", "inputs": {
            "model": ["ms", 0], "layers": layers, "scale": 3.0, "start_percent": start, "end_percent": end}}
        prompt["sample"]["inputs"]["model"] = ["slg", 0]
        outcome, _ = engine.run(prompt)
        assert outcome.status == "success", outcome.error
        return image(engine, outcome)
    assert not np.array_equal(with_slg(0.0, 1.0), image(engine, plain))
    assert np.array_equal(with_slg(0.0, 1.0, layers=""), image(engine, plain))  # no layer: no change
    # the window lies between steps: no step's sigma falls inside it
    assert np.array_equal(with_slg(0.9, 0.95), image(engine, plain))


def test_post_cfg_term_is_the_formula():
    class Sampling:
        def percent_to_sigma(self, p):
            return 1.0 - p

    class Model:
        model_sampling = Sampling()
        model_options = {}

        def clone(self):
            twin = Model()
            twin.model_options = {}
            return twin

        def set_model_sampler_post_cfg_function(self, fn):
            self.model_options.setdefault("sampler_post_cfg_function", []).append(fn)
    patched = SkipLayerGuidanceSD3().run(None, Model(), "1,2", 2.0, 0.0, 1.0)[0]
    fn = patched.model_options["sampler_post_cfg_function"][0]
    out = fn({"denoised": torch.ones(1, 2), "sigma": torch.tensor([2.0]), "cond": ["entry"], "model": None,
              "model_options": {}, "cond_denoised": torch.zeros(1, 2), "input": torch.zeros(1, 2)})
    assert torch.equal(out, torch.ones(1, 2))  # sigma 2 is outside [0, 1]: unchanged
    assert SkipLayerGuidanceDiT().run(None, Model(), "", "", 3.0, 0.0, 1.0, 0.0)[0].model_options == {}


def test_flux_single_blocks_are_skipped_too(flux_engine):  # noqa: F811
    plain, _ = flux_engine.run(flux_checkpoint_prompt(steps=3))
    prompt = flux_checkpoint_prompt(steps=3)
    prompt["slg"] = {"class_type": "SkipLayerGuidanceDiT", "inputs": {
        "model": ["ckpt", 0], "double_layers": "", "single_layers": "1", "scale": 2.0, "start_percent": 0.0,
        "end_percent": 1.0, "rescaling_scale": 0.5}}
    prompt["sample"]["inputs"]["model"] = ["slg", 0]
    outcome, _ = flux_engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert not np.array_equal(image(flux_engine, outcome), image(flux_engine, plain))
    assert os.path.isdir(flux_engine.services.paths.output_dir)
