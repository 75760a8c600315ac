"""SD3 LoRAs in the layouts people share: kohya / ComfyUI original names (`lora_unet_joint_blocks_*`, te1-te3)
and diffusers/PEFT names (`transformer.transformer_blocks.N.attn.to_q`, which patch thirds of our fused qkv),
checked against diffusers' transformer with the same low-rank change merged by hand; applied and restored."""
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model_management.lora_formats import parse_lora
from model_management.weight_patches import SlicedPatch, WeightPatcher
from tests.diffusion.mmdit.helpers import diffusers_sd3, original_state
from tests.nodes.test_sd3_nodes import checkpoint_prompt, engine, image  # noqa: F401 (fixture)


def _factors(out_features, in_features, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, rank, generator=g) * 0.1, torch.randn(rank, in_features, generator=g) * 0.1


def test_diffusers_lora_matches_diffusers_with_the_change_merged():
    ref = diffusers_sd3(layers=2, qk_norm="rms_norm", dual_attention_layers=(0,))
    from diffusion.mmdit.config import detect_mmdit_config
    from diffusion.mmdit.model import MMDiT
    ours = MMDiT(detect_mmdit_config(original_state(ref)))
    ours.load_state_dict(original_state(ref))
    ours.eval()
    lora, merged = {}, {}
    targets = ["transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_v", "transformer_blocks.1.attn.add_k_proj",
               "transformer_blocks.0.attn2.to_k", "transformer_blocks.1.ff.net.0.proj", "context_embedder"]
    params = dict(ref.named_parameters())
    for seed, module in enumerate(targets):
        weight = params[module + ".weight"]
        up, down = _factors(weight.shape[0], weight.shape[1], seed=seed)
        lora[f"transformer.{module}.lora_A.weight"] = down
        lora[f"transformer.{module}.lora_B.weight"] = up
        merged[module] = up @ down
    parsed = parse_lora(lora, [n for n, _ in ours.named_parameters()], [], "sd3")
    assert not parsed.unmatched, parsed.problems
    assert isinstance(parsed.unet["joint_blocks.0.x_block.attn.qkv.weight"], SlicedPatch)
    assert sorted(parsed.unet["joint_blocks.0.x_block.attn.qkv.weight"].parts) == [0, 2]
    with torch.no_grad():
        for module, delta in merged.items():
            params[module + ".weight"].add_(delta)
    torch.manual_seed(3)
    x, context, pooled, t = torch.randn(1, 16, 8, 8), torch.randn(1, 5, 48), torch.randn(1, 40), torch.tensor([700.0])
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    patcher = WeightPatcher(ours, parsed.unet_patches(1.0))
    patcher.apply()
    with torch.no_grad():
        expected = ref(hidden_states=x, encoder_hidden_states=context, pooled_projections=pooled, timestep=t).sample
        got = ours(x, t, context, y=pooled)
    patcher.restore()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())  # restored bit-exact


def test_kohya_lora_through_the_lora_loader(engine, tmp_path):  # noqa: F811
    from model_management.checkpoints import load_checkpoint
    loaded = load_checkpoint(os.path.join(engine.models("checkpoints"), "sd3.5_medium_incl_clips.safetensors"))
    unet = dict(loaded.model.unet.named_parameters())
    stack = dict(loaded.clip.stack.named_parameters())
    lora = {}
    picks = {"lora_unet_joint_blocks_0_x_block_attn_qkv": unet["joint_blocks.0.x_block.attn.qkv.weight"],
             "lora_unet_joint_blocks_0_context_block_mlp_fc1": unet["joint_blocks.0.context_block.mlp.fc1.weight"],
             "lora_te1_text_model_encoder_layers_0_self_attn_q_proj":
                 stack["encoders.0.model.text_model.encoder.layers.0.self_attn.q_proj.weight"],
             "lora_te2_text_model_encoder_layers_1_mlp_fc1": stack["encoders.1.model.text_model.encoder.layers.1.mlp.fc1.weight"],
             "lora_te3_encoder_block_0_layer_0_SelfAttention_q":
                 stack["encoders.2.model.encoder.block.0.layer.0.SelfAttention.q.weight"]}
    for seed, (name, weight) in enumerate(picks.items()):
        up, down = _factors(weight.shape[0], weight.shape[1], seed=seed)
        lora[name + ".lora_up.weight"], lora[name + ".lora_down.weight"] = up * 5, down * 5
        lora[name + ".alpha"] = torch.tensor(4.0)
    parsed = parse_lora(lora, list(unet), list(stack), "sd3")
    assert not parsed.unmatched and len(parsed.unet) == 2 and len(parsed.text) == 3
    os.makedirs(engine.models("loras"), exist_ok=True)
    save_file(lora, os.path.join(engine.models("loras"), "sd3_style.safetensors"))
    plain, _ = engine.run(checkpoint_prompt())
    prompt = checkpoint_prompt()
    prompt["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                            "lora_name": "sd3_style.safetensors",
                                                            "strength_model": 1.0, "strength_clip": 1.0}}
    prompt["ms"]["inputs"]["model"] = ["lora", 0]
    for node in ("pos", "neg"):
        prompt[node]["inputs"]["clip"] = ["lora", 1]
    with_lora, _ = engine.run(prompt)
    assert with_lora.status == "success", with_lora.error
    assert not np.array_equal(image(engine, with_lora), image(engine, plain))
    again, _ = engine.run(checkpoint_prompt(seed=7))  # the cached model is as it was: the plain image again
    assert np.array_equal(image(engine, again), image(engine, plain))


def test_a_bias_on_a_third_of_qkv_is_reported_not_applied():
    ref = diffusers_sd3(layers=2)
    names = list(original_state(ref))
    lora = {"transformer.transformer_blocks.0.attn.to_q.diff_b": torch.zeros(128),
            "transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(2, 128),
            "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(128, 2)}
    parsed = parse_lora(lora, names, [], "sd3")
    assert "transformer.transformer_blocks.0.attn.to_q.diff_b" in parsed.unmatched
    assert "joint_blocks.0.x_block.attn.qkv.weight" in parsed.unet
    with pytest.raises(ValueError, match="unknown model family"):
        parse_lora(lora, names, [], "sd9")
