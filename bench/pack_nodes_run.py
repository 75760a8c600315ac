"""Run the common nodes of real custom node packs end to end on random-weight SD1 models (the "nodes run" column
of the issue 13 table in RESULTS.md).

    python bench/pack_nodes_run.py PACKS_DIR [--deps DIR] [--only NAME]

PACKS_DIR and --deps as for bench/pack_loading.py. Each scenario is a prompt made of a pack's nodes (and built-ins),
validated and run by the engine as the server would; a scenario passes when it completes and its check holds (for
IPAdapter: the adapter changes the image at weight 1 and leaves it unchanged at weight 0). The models are written
here: an SD1 checkpoint in the released layout at 32 base channels (so packs that hard-code SD1's block indices,
like IPAdapter, find their blocks), a CLIP vision tower, an IPAdapter file, a LoRA and an ESRGAN-style upscaler.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402


# -- models ------------------------------------------------------------------------------------------------------
def write_models(models_dir: str) -> dict:
    from diffusion.synthetic_checkpoints import make_checkpoint
    from diffusion.unet import UNetConfig, UNetModel

    os.makedirs(os.path.join(models_dir, "checkpoints"), exist_ok=True)
    state = make_checkpoint("sd1")
    config = UNetConfig.from_levels(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=2,
                                    transformer_depth=(1, 1, 1, 0), transformer_depth_middle=1, context_dim=64,
                                    num_heads=8, num_head_channels=-1, use_linear_in_transformer=False)
    torch.manual_seed(3)
    unet = UNetModel(config)
    state = {k: v for k, v in state.items() if not k.startswith("model.diffusion_model.")}
    state.update({"model.diffusion_model." + k: v.contiguous() for k, v in unet.state_dict().items()})
    save_file(state, os.path.join(models_dir, "checkpoints", "sd1_layout.safetensors"))

    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.manual_seed(4)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=2, image_size=224,
        patch_size=32, projection_dim=48, hidden_act="gelu"))
    os.makedirs(os.path.join(models_dir, "clip_vision"), exist_ok=True)
    save_file({k: v.contiguous() for k, v in vision.state_dict().items() if not k.endswith("position_ids")},
              os.path.join(models_dir, "clip_vision", "tiny_vit.safetensors"))

    # IPAdapter (ip-adapter_sd15 layout): image projection to 4 tokens of the text width, and to_k_ip / to_v_ip for
    # each of SD1's 16 cross-attention layers in the order the pack numbers them (1, 3, ..., 31).
    torch.manual_seed(5)
    cross = 64
    widths = [32, 32, 64, 64, 64, 64] + [64, 64, 64, 64, 64, 64, 32, 32, 32] + [64]
    ip = {"image_proj.proj.weight": torch.randn(cross * 4, 48) * 0.2, "image_proj.proj.bias": torch.zeros(cross * 4),
          "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    for index, width in enumerate(widths):
        ip[f"ip_adapter.{index * 2 + 1}.to_k_ip.weight"] = torch.randn(width, cross) * 0.3
        ip[f"ip_adapter.{index * 2 + 1}.to_v_ip.weight"] = torch.randn(width, cross) * 0.3
    os.makedirs(os.path.join(models_dir, "ipadapter"), exist_ok=True)
    save_file(ip, os.path.join(models_dir, "ipadapter", "ip-adapter_sd15_tiny.safetensors"))

    torch.manual_seed(6)
    q = unet.state_dict()["input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"]
    lora = {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(4, q.shape[1]),
            "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(q.shape[0], 4),
            "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(4.0)}
    os.makedirs(os.path.join(models_dir, "loras"), exist_ok=True)
    save_file(lora, os.path.join(models_dir, "loras", "tiny_lora.safetensors"))

    # a ControlNet for that UNet (its encoder copied at random weights; zero convs random too, so it steers)
    from diffusion.controlnet.model import ControlNet, controlnet_config_from_unet
    torch.manual_seed(7)
    control = ControlNet(controlnet_config_from_unet(config))
    os.makedirs(os.path.join(models_dir, "controlnet"), exist_ok=True)
    save_file({"control_model." + k: v.contiguous() for k, v in control.state_dict().items()},
              os.path.join(models_dir, "controlnet", "tiny_controlnet.safetensors"))

    # SDXL: the tiny SDXL checkpoint, a ControlNet for it and a LoRA on its first self-attention query
    from model_management.synthetic_controlnets import write_controlnet
    sdxl = make_checkpoint("sdxl", seed=8)
    save_file({k: v.contiguous() for k, v in sdxl.items()}, os.path.join(models_dir, "checkpoints", SDXL))
    write_controlnet(os.path.join(models_dir, "controlnet", "tiny_controlnet_sdxl.safetensors"), "sdxl", seed=9)
    key = next(k for k in sorted(sdxl) if k.endswith("attn1.to_q.weight"))
    module = key[len("model.diffusion_model."):-len(".weight")].replace(".", "_")
    torch.manual_seed(10)
    q = sdxl[key]
    save_file({f"lora_unet_{module}.lora_down.weight": torch.randn(4, q.shape[1]),
               f"lora_unet_{module}.lora_up.weight": torch.randn(q.shape[0], 4),
               f"lora_unet_{module}.alpha": torch.tensor(4.0)}, os.path.join(models_dir, "loras", "tiny_lora_sdxl.safetensors"))

    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "model_management"))
    from upscale_fixtures import compact_state_dict  # noqa: PLC0415 - the test suite's SRVGG fixture
    os.makedirs(os.path.join(models_dir, "upscale_models"), exist_ok=True)
    save_file(compact_state_dict(scale=2), os.path.join(models_dir, "upscale_models", "2x_tiny.safetensors"))
    return {"ckpt": "sd1_layout.safetensors"}


# -- scenarios -----------------------------------------------------------------------------------------------------
CKPT = "sd1_layout.safetensors"
SDXL = "sdxl_tiny.safetensors"


def base_graph(extra_model=None, ckpt=CKPT):
    """Checkpoint -> prompts -> KSampler (64x64, 2 steps) -> decode -> preview; `extra_model` patches the MODEL."""
    graph = {
        "ckpt": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "pos": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "a red fox"}},
        "neg": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["ckpt", 1], "text": "blurry"}},
        "lat": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "ks": {"class_type": "KSampler", "inputs": {"model": ["ckpt", 0], "seed": 7, "steps": 2, "cfg": 5.0,
                                                    "sampler_name": "euler", "scheduler": "normal",
                                                    "positive": ["pos", 0], "negative": ["neg", 0],
                                                    "latent_image": ["lat", 0], "denoise": 1.0}},
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckpt", 2]}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["dec", 0]}},
    }
    if extra_model:
        graph.update(extra_model)
        graph["ks"]["inputs"]["model"] = ["patched", 0]
    return graph


def write_ipadapter_plus(models_dir: str) -> bool:
    """An ip-adapter-plus_sd15-layout file: its Resampler made by the pack's own class (once the pack is loaded),
    16 query tokens over the vision tower's penultimate hidden states. False when the pack is not there."""
    module = sys.modules.get("ComfyUI_IPAdapter_plus.image_proj_models")
    if module is None:
        return False
    torch.manual_seed(8)
    resampler = module.Resampler(dim=64, depth=4, dim_head=64, heads=12, num_queries=16, embedding_dim=128,
                                 output_dim=64, ff_mult=4)
    ip = {"image_proj." + k: v.detach().contiguous() for k, v in resampler.state_dict().items()}
    widths = [32, 32, 64, 64, 64, 64] + [64, 64, 64, 64, 64, 64, 32, 32, 32] + [64]
    for index, width in enumerate(widths):
        ip[f"ip_adapter.{index * 2 + 1}.to_k_ip.weight"] = torch.randn(width, 64) * 0.3
        ip[f"ip_adapter.{index * 2 + 1}.to_v_ip.weight"] = torch.randn(width, 64) * 0.3
    save_file(ip, os.path.join(models_dir, "ipadapter", "ip-adapter-plus_sd15_tiny.safetensors"))
    return True


def ipadapter_graph(weight, ipadapter_file="ip-adapter_sd15_tiny.safetensors"):
    return base_graph({
        "img": {"class_type": "EmptyImage", "inputs": {"width": 224, "height": 224, "batch_size": 1,
                                                       "color": 0x3366CC}},
        "cv": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "tiny_vit.safetensors"}},
        "ipa": {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": ipadapter_file}},
        "patched": {"class_type": "IPAdapterAdvanced", "inputs": {
            "model": ["ckpt", 0], "ipadapter": ["ipa", 0], "image": ["img", 0], "weight": weight,
            "weight_type": "linear", "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0,
            "embeds_scaling": "V only", "clip_vision": ["cv", 0]}},
    })


SCENARIOS = []


def scenario(pack, nodes):
    def register(fn):
        SCENARIOS.append((pack, nodes, fn))
        return fn
    return register


@scenario("ComfyUI_IPAdapter_plus", ["IPAdapterModelLoader", "IPAdapterAdvanced", "CLIPVisionLoader"])
def run_ipadapter(engine):
    plain = engine.image(base_graph())
    zero = engine.image(ipadapter_graph(0.0))
    one = engine.image(ipadapter_graph(1.0))
    assert torch.allclose(plain, zero, atol=1e-5), "weight 0 changed the image"
    assert (plain - one).abs().max() > 1e-3, "weight 1 left the image unchanged"
    engine.image(base_graph())  # and the patch is gone afterwards
    assert torch.allclose(engine.image(base_graph()), plain, atol=1e-6), "the patch outlived its run"


@scenario("ComfyUI_IPAdapter_plus", ["IPAdapterAdvanced with an IPAdapter Plus file (penultimate hidden states)"])
def run_ipadapter_plus(engine):
    if not write_ipadapter_plus(engine.services.paths.models_dir):
        raise AssertionError("the pack's image_proj_models module is not loaded")
    plain = engine.image(base_graph())
    zero = engine.image(ipadapter_graph(0.0, "ip-adapter-plus_sd15_tiny.safetensors"))
    one = engine.image(ipadapter_graph(1.0, "ip-adapter-plus_sd15_tiny.safetensors"))
    assert torch.allclose(plain, zero, atol=1e-5), "weight 0 changed the image"
    assert (plain - one).abs().max() > 1e-3, "weight 1 left the image unchanged"


def check_power_lora(engine, ckpt, lora):
    plain = engine.image(base_graph(ckpt=ckpt))
    graph = base_graph({"patched": {"class_type": "Power Lora Loader (rgthree)", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1],
        "lora_1": {"on": True, "lora": lora, "strength": 1.0}}}}, ckpt=ckpt)
    assert (engine.image(graph) - plain).abs().max() > 1e-4, "the LoRA did not change the image"


@scenario("rgthree-comfy", ["Power Lora Loader (rgthree)"])
def run_power_lora(engine):
    check_power_lora(engine, CKPT, "tiny_lora.safetensors")


def check_ultimate(engine, ckpt):
    graph = base_graph(ckpt=ckpt)
    graph["up"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "2x_tiny.safetensors"}}
    graph["usd"] = {"class_type": "UltimateSDUpscale", "inputs": {
        "image": ["dec", 0], "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0],
        "vae": ["ckpt", 2], "upscale_by": 2.0, "seed": 1, "steps": 1, "cfg": 5.0, "sampler_name": "euler",
        "scheduler": "normal", "denoise": 0.3, "upscale_model": ["up", 0], "mode_type": "Linear",
        "tile_width": 64, "tile_height": 64, "mask_blur": 8, "tile_padding": 16, "seam_fix_mode": "None",
        "seam_fix_denoise": 1.0, "seam_fix_width": 64, "seam_fix_mask_blur": 8, "seam_fix_padding": 16,
        "force_uniform_tiles": True, "tiled_decode": False, "batch_size": 1}}
    graph["out"]["inputs"]["images"] = ["usd", 0]
    assert tuple(engine.image(graph).shape) == (1, 128, 128, 3)


@scenario("ComfyUI_UltimateSDUpscale", ["UltimateSDUpscale"])
def run_ultimate(engine):
    check_ultimate(engine, CKPT)


@scenario("ComfyUI-KJNodes", ["ImageSharpenKJ", "SimpleCalculatorKJ", "ImageResizeKJv2", "GetImageSizeAndCount"])
def run_kjnodes(engine):
    graph = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 32, "batch_size": 2, "color": 0x808080}},
        "sharp": {"class_type": "ImageSharpenKJ", "inputs": {"image": ["img", 0], "method": "high_pass",
                                                             "method.strength": 0.5, "method.radius": 1.0}},
        "resize": {"class_type": "ImageResizeKJv2", "inputs": {
            "image": ["sharp", 0], "width": 24, "height": 16, "upscale_method": "bilinear",
            "keep_proportion": "stretch", "pad_color": "0, 0, 0", "crop_position": "center", "divisible_by": 2}},
        "size": {"class_type": "GetImageSizeAndCount", "inputs": {"image": ["resize", 0]}},
        "calc": {"class_type": "SimpleCalculatorKJ", "inputs": {"expression": "a * b + 1",
                                                               "variables.a": ["size", 1], "variables.b": 3}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["calc", 1]}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["size", 0]}},
    }
    outcome = engine.run(graph)
    assert outcome.outputs["show"]["text"] == ["73"], outcome.outputs["show"]  # width 24 * 3 + 1


@scenario("ComfyUI-KJNodes", ["LatentInpaintTTM (an OUTER_SAMPLE wrapper)"])
def run_kjnodes_ttm(engine):
    """cfg 1: the pack's wrapper compares the schedule with a one-item sigma (as on ComfyUI, a cond+uncond batch
    of two would not broadcast)."""
    plain = engine.image(base_graph())
    graph = base_graph({
        "mask": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 8, "height": 8}},
        "patched": {"class_type": "LatentInpaintTTM", "inputs": {"model": ["ckpt", 0], "steps": 2,
                                                                 "mask": ["mask", 0]}}})
    graph["ks"]["inputs"].update(steps=3, cfg=1.0)
    ttm = engine.image(graph)
    graph3 = base_graph()
    graph3["ks"]["inputs"].update(steps=3, cfg=1.0)
    assert (ttm - engine.image(graph3)).abs().max() > 1e-4, "the TTM wrapper did not change the image"
    assert torch.allclose(engine.image(base_graph()), plain), "the wrapper outlived its run"


@scenario("ComfyUI-KJNodes", ["ModelMemoryUsageFactorOverride (a PREPARE_SAMPLING wrapper)"])
def run_kjnodes_memory_factor(engine):
    graph = base_graph({"patched": {"class_type": "ModelMemoryUsageFactorOverride", "inputs": {
        "model": ["ckpt", 0], "memory_usage_factor": 2.0}}})
    assert torch.equal(engine.image(graph), engine.image(base_graph())), "the estimate changed the image"


@scenario("ComfyUI_essentials", ["ImageResize+", "ImageFlip+", "MaskBlur+", "SimpleMath+"])
def run_essentials(engine):
    graph = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 40, "height": 30, "batch_size": 1, "color": 0xFF0000}},
        "resize": {"class_type": "ImageResize+", "inputs": {
            "image": ["img", 0], "width": 20, "height": 16, "interpolation": "bicubic", "method": "stretch",
            "condition": "always", "multiple_of": 0}},
        "flip": {"class_type": "ImageFlip+", "inputs": {"image": ["resize", 0], "axis": "x"}},
        "mask": {"class_type": "ImageToMask", "inputs": {"image": ["flip", 0], "channel": "red"}},
        "blur": {"class_type": "MaskBlur+", "inputs": {"mask": ["mask", 0], "amount": 2, "device": "cpu"}},
        "math": {"class_type": "SimpleMath+", "inputs": {"value": "a * 2 + b", "a": ["resize", 1], "b": 1}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["math", 0]}},
        "m2i": {"class_type": "MaskToImage", "inputs": {"mask": ["blur", 0]}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["m2i", 0]}},
    }
    outcome = engine.run(graph)
    assert outcome.outputs["show"]["text"] == ["41"], outcome.outputs["show"]


def efficiency_graph(positive, token_normalization, weight_interpretation, ckpt=CKPT):
    return {
        "load": {"class_type": "Efficient Loader", "inputs": {
            "ckpt_name": ckpt, "vae_name": "Baked VAE", "clip_skip": -1, "lora_name": "None",
            "lora_model_strength": 1.0, "lora_clip_strength": 1.0, "positive": positive, "negative": "blurry",
            "token_normalization": token_normalization, "weight_interpretation": weight_interpretation,
            "empty_latent_width": 64, "empty_latent_height": 64, "batch_size": 1}},
        "ks": {"class_type": "KSampler (Efficient)", "inputs": {
            "model": ["load", 0], "positive": ["load", 1], "negative": ["load", 2], "latent_image": ["load", 3],
            "optional_vae": ["load", 4], "seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "preview_method": "none", "vae_decode": "true"}},
        "out": {"class_type": "PreviewImage", "inputs": {"images": ["ks", 5]}},
    }


@scenario("efficiency-nodes-comfyui", ["Efficient Loader", "KSampler (Efficient)"])
def run_efficiency(engine):
    outcome = engine.run(efficiency_graph("a red fox", "none", "comfy"))
    assert outcome.outputs["out"]["images"], outcome.outputs


@scenario("efficiency-nodes-comfyui", ["Efficient Loader with A1111 weighting and mean token normalization"])
def run_efficiency_advanced_encode(engine):
    """Its advanced encoding tokenizes with word ids, reweights and encodes the tokens itself."""
    outcome = engine.run(efficiency_graph("a (red:1.3) fox, [blurry]", "mean", "A1111"))
    assert outcome.outputs["out"]["images"], outcome.outputs


@scenario("ComfyUI-Inspire-Pack", ["KSampler //Inspire", "ScheduledCFGGuider //Inspire"])
def run_inspire(engine):
    graph = base_graph()
    graph["ks"] = {"class_type": "KSampler //Inspire", "inputs": {
        "model": ["ckpt", 0], "seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal",
        "positive": ["pos", 0], "negative": ["neg", 0], "latent_image": ["lat", 0], "denoise": 1.0,
        "noise_mode": "CPU", "batch_seed_mode": "incremental", "variation_seed": 0, "variation_strength": 0.0}}
    inspire = engine.image(graph)
    assert torch.allclose(inspire, engine.image(base_graph()), atol=1e-4), "KSampler //Inspire differs from KSampler"
    sched = base_graph()
    sched["sig"] = {"class_type": "BasicScheduler", "inputs": {"model": ["ckpt", 0], "scheduler": "normal",
                                                                "steps": 2, "denoise": 1.0}}
    sched["guider"] = {"class_type": "ScheduledCFGGuider //Inspire", "inputs": {
        "model": ["ckpt", 0], "positive": ["pos", 0], "negative": ["neg", 0], "sigmas": ["sig", 0],
        "from_cfg": 5.0, "to_cfg": 1.0, "schedule": "linear"}}
    sched["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}}
    sched["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    sched["ks"] = {"class_type": "SamplerCustomAdvanced", "inputs": {
        "noise": ["noise", 0], "guider": ["guider", 0], "sampler": ["sampler", 0], "sigmas": ["guider", 1],
        "latent_image": ["lat", 0]}}
    engine.image(sched)


@scenario("ComfyUI-Inspire-Pack", ["LoraLoaderBlockWeight //Inspire"])
def run_inspire_lbw(engine):
    plain = engine.image(base_graph())
    graph = base_graph({"patched": {"class_type": "LoraLoaderBlockWeight //Inspire", "inputs": {
        "model": ["ckpt", 0], "clip": ["ckpt", 1], "category_filter": "All", "lora_name": "tiny_lora.safetensors",
        "strength_model": 1.0, "strength_clip": 1.0, "inverse": False, "seed": 0, "A": 4.0, "B": 1.0,
        "preset": "Preset", "block_vector": "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1", "bypass": False}}})
    assert (engine.image(graph) - plain).abs().max() > 1e-4, "the block-weighted LoRA did not change the image"
    muted = base_graph({"patched": dict(graph["patched"])})
    muted["patched"]["inputs"] = dict(graph["patched"]["inputs"], block_vector="0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0")
    assert torch.allclose(engine.image(muted), plain, atol=1e-4), "all-zero block weights changed the image"


@scenario("ComfyUI-Impact-Pack", ["ImpactInt", "ImpactConditionalBranch", "ImpactCompare"])
def run_impact(engine):
    graph = {
        "a": {"class_type": "ImpactInt", "inputs": {"value": 3}},
        "b": {"class_type": "ImpactInt", "inputs": {"value": 5}},
        "cmp": {"class_type": "ImpactCompare", "inputs": {"cmp": "a < b", "a": ["a", 0], "b": ["b", 0]}},
        "branch": {"class_type": "ImpactConditionalBranch", "inputs": {"cond": ["cmp", 0], "tt_value": ["a", 0],
                                                                      "ff_value": ["b", 0]}},
        "show": {"class_type": "PreviewAny", "inputs": {"source": ["branch", 0]}},
    }
    outcome = engine.run(graph)
    assert outcome.outputs["show"]["text"] == ["3"], outcome.outputs["show"]


def check_impact_pipe(engine, ckpt):
    reference = engine.image(base_graph(ckpt=ckpt))
    graph = base_graph(ckpt=ckpt)
    graph["pipe"] = {"class_type": "ToBasicPipe", "inputs": {"model": ["ckpt", 0], "clip": ["ckpt", 1],
                                                             "vae": ["ckpt", 2], "positive": ["pos", 0],
                                                             "negative": ["neg", 0]}}
    graph["ks"] = {"class_type": "ImpactKSamplerBasicPipe", "inputs": {
        "basic_pipe": ["pipe", 0], "seed": 7, "steps": 2, "cfg": 5.0, "sampler_name": "euler",
        "scheduler": "normal", "latent_image": ["lat", 0], "denoise": 1.0}}
    graph["dec"]["inputs"] = {"samples": ["ks", 1], "vae": ["ks", 2]}
    assert torch.allclose(engine.image(graph), reference, atol=2 / 255), "KSampler (pipe) differs from KSampler"


@scenario("ComfyUI-Impact-Pack", ["ToBasicPipe", "ImpactKSamplerBasicPipe (its own sampling through comfy.sample)"])
def run_impact_pipe(engine):
    check_impact_pipe(engine, CKPT)


def acn_graph(loader="ACN_ControlNetLoaderAdvanced", apply="ACN_AdvancedControlNetApply_v2", extra=None,
              strength=1.0, ckpt=CKPT, name="tiny_controlnet.safetensors"):
    """base_graph with a ControlNet applied to both prompts; `extra` adds nodes and links into the apply node."""
    graph = base_graph(ckpt=ckpt)
    graph["hint"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                           "color": 0xFFFFFF}}
    graph["grad"] = {"class_type": "ImageBlend", "inputs": {"image1": ["hint", 0], "image2": ["dec0", 0],
                                                           "blend_factor": 0.5, "blend_mode": "multiply"}}
    graph["dec0"] = {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1,
                                                           "color": 0x3080C0}}
    graph["cn"] = {"class_type": loader, "inputs": {"cnet": name} if loader.startswith("ACN") else
                   {"control_net_name": name}}
    inputs = {"positive": ["pos", 0], "negative": ["neg", 0], "control_net": ["cn", 0], "image": ["grad", 0],
              "strength": strength, "start_percent": 0.0, "end_percent": 1.0}
    graph["apply"] = {"class_type": apply, "inputs": inputs}
    for node_id, node, link_as in (extra or []):
        graph[node_id] = node
        if link_as:
            inputs[link_as] = [node_id, 0]
    graph["ks"]["inputs"]["positive"], graph["ks"]["inputs"]["negative"] = ["apply", 0], ["apply", 1]
    return graph


@scenario("ComfyUI-Advanced-ControlNet", ["ACN_ControlNetLoaderAdvanced", "ACN_AdvancedControlNetApply_v2"])
def run_acn(engine):
    plain = engine.image(base_graph())
    builtin = engine.image(acn_graph("ControlNetLoader", "ControlNetApplyAdvanced"))
    theirs = engine.image(acn_graph())
    assert (builtin - plain).abs().max() > 8 / 255, "the ControlNet does not steer"
    assert (theirs - builtin).abs().max() <= 1 / 255, "the pack's ControlNet differs from the built-in one"
    mixed = engine.image(acn_graph("ControlNetLoader"))  # the core loader's CONTROL_NET into the pack's apply
    assert (mixed - builtin).abs().max() <= 1 / 255, "the core loader's ControlNet differs in the pack's apply"


@scenario("ComfyUI-Advanced-ControlNet", ["TimestepKeyframe (strength 0)", "mask_optional (all 0)",
                                          "ACN_ScaledSoftControlNetWeights"])
def run_acn_keyframes_masks_weights(engine):
    plain = engine.image(base_graph())
    full = engine.image(acn_graph())
    off = engine.image(acn_graph(extra=[("tk", {"class_type": "TimestepKeyframe", "inputs": {
        "start_percent": 0.0, "strength": 0.0}}, "timestep_kf")]))
    assert (off - plain).abs().max() <= 1 / 255, "a keyframe of strength 0 still steers"
    masked = engine.image(acn_graph(extra=[("mask", {"class_type": "SolidMask", "inputs": {
        "value": 0.0, "width": 64, "height": 64}}, "mask_optional")]))
    assert (masked - plain).abs().max() <= 1 / 255, "an all-zero mask still steers"
    soft = engine.image(acn_graph(extra=[("w", {"class_type": "ACN_ScaledSoftControlNetWeights", "inputs": {
        "base_multiplier": 0.5}}, "weights_override")]))
    assert (soft - full).abs().max() > 1 / 255 and (soft - plain).abs().max() > 1 / 255, "soft weights do nothing"


@scenario("ComfyUI-Advanced-ControlNet", ["SDXL: ACN_ControlNetLoaderAdvanced, ACN_AdvancedControlNetApply_v2"])
def run_acn_sdxl(engine):
    kw = dict(ckpt=SDXL, name="tiny_controlnet_sdxl.safetensors")
    plain = engine.image(base_graph(ckpt=SDXL))
    builtin = engine.image(acn_graph("ControlNetLoader", "ControlNetApplyAdvanced", **kw))
    assert (builtin - plain).abs().max() > 8 / 255, "the ControlNet does not steer"
    assert (engine.image(acn_graph(**kw)) - builtin).abs().max() <= 1 / 255, "the pack's ControlNet differs"


@scenario("efficiency-nodes-comfyui", ["SDXL: Efficient Loader, KSampler (Efficient)"])
def run_efficiency_sdxl(engine):
    outcome = engine.run(efficiency_graph("a red fox", "none", "comfy", ckpt=SDXL))
    assert outcome.outputs["out"]["images"], outcome.outputs


@scenario("rgthree-comfy", ["SDXL: Power Lora Loader (rgthree)"])
def run_power_lora_sdxl(engine):
    check_power_lora(engine, SDXL, "tiny_lora_sdxl.safetensors")


@scenario("ComfyUI-Impact-Pack", ["SDXL: ToBasicPipe, ImpactKSamplerBasicPipe"])
def run_impact_pipe_sdxl(engine):
    check_impact_pipe(engine, SDXL)


@scenario("ComfyUI_UltimateSDUpscale", ["SDXL: UltimateSDUpscale"])
def run_ultimate_sdxl(engine):
    check_ultimate(engine, SDXL)


@scenario("ComfyUI-Custom-Scripts", ["MathExpression|pysssss", "ShowText|pysssss"])
def run_custom_scripts(engine):
    graph = {
        "img": {"class_type": "EmptyImage", "inputs": {"width": 10, "height": 6, "batch_size": 1, "color": 0}},
        "math": {"class_type": "MathExpression|pysssss", "inputs": {"expression": "a.width * 2 + 1", "a": ["img", 0]}},
        "text": {"class_type": "PrimitiveString", "inputs": {"value": "hello"}},
        "show": {"class_type": "ShowText|pysssss", "inputs": {"text": ["text", 0]}},
    }
    outcome = engine.run(graph)
    assert outcome.outputs["math"]["value"] == [21], outcome.outputs["math"]
    assert outcome.outputs["show"]["text"] == ["hello"], outcome.outputs["show"]


# -- the engine ----------------------------------------------------------------------------------------------------
class Engine:
    def __init__(self, catalogue, services):
        from execution.caches import ClassicCache
        from execution.scheduler import Executor
        self.catalogue, self.services = catalogue, services
        self.executor = Executor(catalogue, ClassicCache(), services)

    def run(self, prompt):
        from execution.events import RecordingSink
        from execution.scheduler import Job
        from graph.validation import validate_prompt
        checked = validate_prompt(prompt, self.catalogue, None, self.services)
        if not checked.ok:
            raise AssertionError(f"validation failed: {checked.error} {checked.node_errors}")
        outcome = self.executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {},
                                                 checked.order), RecordingSink())
        if outcome.status != "success":
            raise AssertionError(f"{outcome.status}: {(outcome.error or {}).get('exception_message')}")
        return outcome

    def image(self, prompt):
        import numpy as np
        from PIL import Image
        outcome = self.run(prompt)
        entry = outcome.outputs["out"]["images"][0]
        folder = self.services.paths.temp_dir if entry["type"] == "temp" else self.services.paths.output_dir
        pixels = np.asarray(Image.open(os.path.join(folder, entry["subfolder"], entry["filename"])), dtype=np.float32)
        return torch.from_numpy(pixels / 255.0)[None]


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packs_dir")
    parser.add_argument("--deps", default=None)
    parser.add_argument("--only", default=None, help="run only this pack's scenario")
    args = parser.parse_args(argv)
    if args.deps:
        sys.path.append(os.path.abspath(args.deps))
    logging.basicConfig(level=logging.CRITICAL)
    from compat.packs import load_packs
    from model_management.services import Services
    from nodes import builtin_catalogue

    base = tempfile.mkdtemp(prefix="tessera_pack_runs_")
    services = Services.for_directory(base)
    write_models(services.paths.models_dir)
    catalogue = builtin_catalogue()
    loaded = {r.name: r for r in load_packs([args.packs_dir], catalogue, services)}
    engine = Engine(catalogue, services)
    print("| pack | nodes run | result |")
    print("|---|---|---|")
    passed = 0
    for pack, nodes, fn in SCENARIOS:
        if args.only and args.only != pack:
            continue
        if pack not in loaded or not loaded[pack].ok:
            print(f"| {pack} | {', '.join(nodes)} | pack did not load |")
            continue
        try:
            fn(engine)
            passed += 1
            print(f"| {pack} | {', '.join(nodes)} | ok |")
        except Exception as exc:  # noqa: BLE001 - the table says what failed
            last = str(exc).strip().splitlines()[-1][:150] if str(exc).strip() else type(exc).__name__
            print(f"| {pack} | {', '.join(nodes)} | fails: {last} |")
            if os.environ.get("TESSERA_BENCH_TRACE"):
                traceback.print_exc()
    chosen = [sc for sc in SCENARIOS if not args.only or sc[0] == args.only]
    print(f"\n{passed} of {len(chosen)} scenarios pass")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
