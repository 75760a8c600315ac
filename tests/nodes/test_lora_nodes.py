"""LoRA nodes through the engine: patches recorded on clones, applied while used, weights restored bit-exact."""
import os

import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint
from nodes.lora import LoraLoader, LoraLoaderModelOnly
from nodes.sampling import common_ksampler
from tests.nodes.test_model_nodes import ModelEngine


class Ctx:
    def __init__(self, services):
        self.services = services
        self.texts = []

    def report_text(self, text):
        self.texts.append(text)


def make_lora(path, unet, stack, junk=False):
    torch.manual_seed(0)
    state = {}
    q = unet.state_dict()["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"]
    base = "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"
    state[base + ".lora_down.weight"] = torch.randn(4, q.shape[1]) * 0.5
    state[base + ".lora_up.weight"] = torch.randn(q.shape[0], 4) * 0.5
    state[base + ".alpha"] = torch.tensor(2.0)
    tq = stack.state_dict()["encoders.0.model.encoder.layers.0.self_attn.q_proj.weight"]
    text = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    state[text + ".lora_down.weight"] = torch.randn(4, tq.shape[1]) * 0.5
    state[text + ".lora_up.weight"] = torch.randn(tq.shape[0], 4) * 0.5
    state[text + ".alpha"] = torch.tensor(4.0)
    if junk:
        state["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(2, 2)
    save_file(state, path)


def snapshot(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_lora_changes_outputs_and_leaves_the_loaded_weights_untouched(tmp_path, tiny_models):
    engine = ModelEngine(tmp_path)
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    make_lora(os.path.join(engine.models("loras"), "style.safetensors"), loaded.model.unet, loaded.clip.stack,
              junk=True)
    ctx = Ctx(engine.services)
    unet_before, text_before = snapshot(loaded.model.unet), snapshot(loaded.clip.stack)
    model, clip = LoraLoader().run(ctx, loaded.model, loaded.clip, "style.safetensors", 1.0, 1.0)
    assert len(model.patches) == 1 and len(clip.patches) == 1 and not loaded.model.patches
    assert ctx.texts and "lora_unet_not_a_layer" in ctx.texts[0]  # unmatched keys are reported
    base_cond = loaded.clip.encode("a cat")[0]
    lora_cond = clip.encode("a cat")[0]
    assert not torch.allclose(base_cond, lora_cond)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    pos = [[base_cond, {}]]
    plain = common_ksampler(None, loaded.model, 1, 3, 1.0, "euler", "karras", pos, pos, latent)["samples"]
    patched = common_ksampler(None, model, 1, 3, 1.0, "euler", "karras", pos, pos, latent)["samples"]
    assert not torch.allclose(plain, patched)
    zero, _ = LoraLoader().run(ctx, loaded.model, loaded.clip, "style.safetensors", 0.0, 0.0)
    assert torch.equal(common_ksampler(None, zero, 1, 3, 1.0, "euler", "karras", pos, pos, latent)["samples"], plain)
    for before, module in ((unet_before, loaded.model.unet), (text_before, loaded.clip.stack)):
        after = module.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)  # restored bit-exact
    only = LoraLoaderModelOnly().run(ctx, loaded.model, "style.safetensors", 0.5)[0]
    assert len(only.patches) == 1 and only.patches[0][2] == 0.5


def test_lora_through_the_engine_and_a_wrong_family(tmp_path, tiny_models):
    engine = ModelEngine(tmp_path)
    os.symlink(tiny_models.checkpoint("sd1"), os.path.join(engine.models("checkpoints"), "m.safetensors"))
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"))
    make_lora(os.path.join(engine.models("loras"), "style.safetensors"), loaded.model.unet, loaded.clip.stack)
    save_file({"lora_unet_something_else.lora_up.weight": torch.zeros(2, 2),
               "lora_unet_something_else.lora_down.weight": torch.zeros(2, 2)},
              os.path.join(engine.models("loras"), "other.safetensors"))
    prompt = {
        "c": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "m.safetensors"}},
        "l": {"class_type": "LoraLoader", "inputs": {"model": ["c", 0], "clip": ["c", 1],
                                                     "lora_name": "style.safetensors", "strength_model": 0.8,
                                                     "strength_clip": 0.8}},
        "t": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["l", 1]}},
        "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "k": {"class_type": "KSampler", "inputs": {"model": ["l", 0], "seed": 1, "steps": 3, "cfg": 3.0,
                                                   "sampler_name": "euler", "scheduler": "normal",
                                                   "positive": ["t", 0], "negative": ["t", 0],
                                                   "latent_image": ["e", 0], "denoise": 1.0}},
        "o": {"class_type": "PreviewAny", "inputs": {"source": ["k", 0]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    prompt["l"]["inputs"]["lora_name"] = "other.safetensors"
    outcome, sink = engine.run(prompt)
    assert outcome.status == "error"
    assert "no key of this LoRA matches" in sink.of("execution_error")[0]["exception_message"]
