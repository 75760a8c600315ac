"""Flux LoRAs: kohya's original names (`lora_unet_double_blocks_*`, `lora_unet_single_blocks_*`) and diffusers /
PEFT names (ai-toolkit's `transformer.single_transformer_blocks.N.attn.to_q`, `proj_mlp`), which patch blocks of
our fused layers; checked against diffusers' transformer with the same change merged by hand."""
import torch

from diffusion.flux.config import detect_flux_config
from diffusion.flux.model import Flux
from model_management.lora_formats import parse_lora
from model_management.weight_patches import SlicedPatch, WeightPatcher
from tests.diffusion.flux.helpers import diffusers_flux, image_ids, original_state, pack, unpack


def _factors(out_features, in_features, rank=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(out_features, rank, generator=g) * 0.1, torch.randn(rank, in_features, generator=g) * 0.1


def _model(ref):
    state = original_state(ref)
    model = Flux(detect_flux_config(state))
    model.load_state_dict(state)
    return model.eval()


def test_diffusers_lora_matches_diffusers_with_the_change_merged():
    ref = diffusers_flux()
    ours = _model(ref)
    targets = ["transformer_blocks.0.attn.to_k", "transformer_blocks.1.attn.add_v_proj",
               "transformer_blocks.0.ff.net.0.proj", "single_transformer_blocks.0.attn.to_q",
               "single_transformer_blocks.1.proj_mlp", "single_transformer_blocks.1.proj_out", "x_embedder"]
    params = dict(ref.named_parameters())
    lora = {}
    merged = {}
    for seed, module in enumerate(targets):
        weight = params[module + ".weight"]
        up, down = _factors(weight.shape[0], weight.shape[1], seed=seed)
        lora[f"transformer.{module}.lora_A.weight"], lora[f"transformer.{module}.lora_B.weight"] = down, up
        merged[module] = up @ down
    parsed = parse_lora(lora, [n for n, _ in ours.named_parameters()], [], "sd1")
    assert not parsed.unmatched, parsed.problems
    linear1 = parsed.unet["single_blocks.1.linear1.weight"]
    assert isinstance(linear1, SlicedPatch) and linear1.shares == (1, 1, 1, 4) and list(linear1.parts) == [3]
    with torch.no_grad():
        for module, delta in merged.items():
            params[module + ".weight"].add_(delta)
    torch.manual_seed(2)
    x, context, pooled = torch.randn(1, 16, 8, 8), torch.randn(1, 5, 48), torch.randn(1, 40)
    t, g = torch.tensor([0.6]), torch.tensor([3.5])
    patcher = WeightPatcher(ours, parsed.unet_patches(1.0))
    patcher.apply()
    with torch.no_grad():
        expected = ref(hidden_states=pack(x), encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                       img_ids=image_ids(8, 8), txt_ids=torch.zeros(5, 3), guidance=g).sample
        got = ours(x, t, context, y=pooled, guidance=g)
    patcher.restore()
    torch.testing.assert_close(got, unpack(expected, 16, 8, 8), atol=1e-4, rtol=1e-4)


def test_kohya_original_names():
    ours = _model(diffusers_flux())
    params = dict(ours.named_parameters())
    lora = {}
    for seed, module in enumerate(["double_blocks.0.img_attn.qkv", "single_blocks.1.linear2", "txt_in"]):
        weight = params[module + ".weight"]
        up, down = _factors(weight.shape[0], weight.shape[1], seed=seed)
        key = "lora_unet_" + module.replace(".", "_")
        lora[key + ".lora_up.weight"], lora[key + ".lora_down.weight"] = up, down
        lora[key + ".alpha"] = torch.tensor(2.0)
    parsed = parse_lora(lora, list(params), [], "sd1")
    assert not parsed.unmatched and sorted(parsed.unet) == ["double_blocks.0.img_attn.qkv.weight",
                                                            "single_blocks.1.linear2.weight", "txt_in.weight"]
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    patcher = WeightPatcher(ours, parsed.unet_patches(0.8))
    patcher.apply()
    changed = ours.state_dict()["txt_in.weight"].clone()
    patcher.restore()
    up, down = lora["lora_unet_txt_in.lora_up.weight"], lora["lora_unet_txt_in.lora_down.weight"]
    torch.testing.assert_close(changed, before["txt_in.weight"] + 0.8 * (up @ down) * (2.0 / 4))
    assert all(torch.equal(before[k], v) for k, v in ours.state_dict().items())


def test_text_encoder_keys_by_role(tiny_models):
    from model_management.checkpoints import load_checkpoint
    loaded = load_checkpoint(tiny_models.flux("checkpoint"))
    text_names = [n for n, _ in loaded.clip.stack.named_parameters()]
    lora = {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.zeros(64, 2),
            "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.zeros(2, 64),
            "lora_te3_encoder_block_0_layer_0_SelfAttention_q.lora_up.weight": torch.zeros(256, 2),
            "lora_te3_encoder_block_0_layer_0_SelfAttention_q.lora_down.weight": torch.zeros(2, 256),
            "text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo.lora_A.weight": torch.zeros(2, 512),
            "text_encoder_2.encoder.block.1.layer.1.DenseReluDense.wo.lora_B.weight": torch.zeros(256, 2)}
    parsed = parse_lora(lora, [n for n, _ in loaded.model.unet.named_parameters()], text_names, "flux")
    assert not parsed.unmatched
    assert sorted(parsed.text) == ["encoders.0.model.text_model.encoder.layers.0.self_attn.q_proj.weight",
                                   "encoders.1.model.encoder.block.0.layer.0.SelfAttention.q.weight",
                                   "encoders.1.model.encoder.block.1.layer.1.DenseReluDense.wo.weight"]


def test_xlabs_layout():
    """XLabs' Flux LoRAs name the double blocks' attention by stream: lora1 image, lora2 text."""
    ours = _model(diffusers_flux())
    params = dict(ours.named_parameters())
    lora = {}
    for stream, module in (("1", "img_attn.qkv"), ("2", "txt_attn.proj")):
        weight = params[f"double_blocks.1.{module}.weight"]
        up, down = _factors(weight.shape[0], weight.shape[1])
        kind = module.split(".")[1]
        lora[f"double_blocks.1.processor.{kind}_lora{stream}.up.weight"] = up
        lora[f"double_blocks.1.processor.{kind}_lora{stream}.down.weight"] = down
    parsed = parse_lora(lora, list(params), [], "flux")
    assert not parsed.unmatched
    assert sorted(parsed.unet) == ["double_blocks.1.img_attn.qkv.weight", "double_blocks.1.txt_attn.proj.weight"]
