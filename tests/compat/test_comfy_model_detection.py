"""comfy.model_detection, comfy.utils' UNet key maps, comfy.cldm.cldm.ControlNet and comfy.hooks: what packs use to
build their own control networks and to hook a sampler run, checked against diffusers and closed forms."""
import os
import sys

import pytest
import torch
from diffusers import UNet2DConditionModel

import compat
from diffusion.controlnet.model import ControlNet as EngineNetwork
from diffusion.controlnet.model import controlnet_config_from_unet
from diffusion.unet.config import sd15_config, sdxl_base_config, tiny_sd1_config
from diffusion.unet.model import UNetModel

if compat.COMPAT_DIR not in sys.path:
    sys.path.append(compat.COMPAT_DIR)

import comfy.model_detection as md  # noqa: E402
import comfy.utils  # noqa: E402
from comfy.cldm.cldm import ControlNet as CLDMControlNet  # noqa: E402


def test_count_blocks_counts_consecutive_indices():
    keys = ["input_blocks.0.0.weight", "input_blocks.1.0.in_layers.0.weight", "input_blocks.2.1.proj_in.weight",
            "input_blocks.4.0.weight"]
    assert md.count_blocks(keys, "input_blocks.{}.") == 3  # 3 is missing, so 4 is not reached
    assert md.count_blocks(keys, "output_blocks.{}.") == 0


def test_convert_config_expands_an_old_style_config():
    old = {"num_res_blocks": 2, "channel_mult": [1, 2, 4, 4], "attention_resolutions": [4, 2, 1],
           "transformer_depth": 1, "model_channels": 320, "in_channels": 4, "context_dim": 768}
    new = md.convert_config(old)
    assert "attention_resolutions" not in new and "attention_resolutions" in old  # the input is not modified
    assert new["num_res_blocks"] == [2, 2, 2, 2]
    assert new["transformer_depth"] == [1, 1, 1, 1, 1, 1, 0, 0]
    assert new["transformer_depth_output"] == [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    assert new["transformer_depth_middle"] == 1
    # and it is the SD1.5 UNet
    assert md.unet_config_from_comfy(new) == sd15_config()


@pytest.mark.parametrize("cfg", [sd15_config(), sdxl_base_config(), tiny_sd1_config()], ids=["sd15", "sdxl", "tiny"])
def test_comfy_dicts_round_trip_and_follow_comfyui_order(cfg):
    d = md.comfy_unet_config(cfg)
    assert md.unet_config_from_comfy(d) == cfg
    # ComfyUI lists the output side shallowest level first and pops from the end: the first output block (deepest
    # level) is the list's last entry
    assert d["transformer_depth_output"][-1] == cfg.transformer_depth_output[0]
    assert isinstance(d["num_res_blocks"], list) and d["use_spatial_transformer"] is True


def test_model_config_from_a_unet_and_a_controlnet_state_dict():
    torch.manual_seed(0)
    cfg = tiny_sd1_config()
    unet_sd = {"model.diffusion_model." + k: v for k, v in UNetModel(cfg).state_dict().items()}
    config = md.model_config_from_unet(unet_sd, "model.diffusion_model.")
    assert md.unet_config_from_comfy(config.unet_config) == cfg
    assert type(config.latent_format).__name__ == "SD15"
    control_sd = EngineNetwork(controlnet_config_from_unet(cfg)).state_dict()
    encoder = md.unet_config_from_comfy(md.model_config_from_unet(control_sd, "").unet_config)
    assert (encoder.model_channels, encoder.transformer_depth, encoder.context_dim) == \
        (cfg.model_channels, cfg.transformer_depth, cfg.context_dim)
    assert md.model_config_from_unet({"nothing.here": torch.zeros(1)}, "") is None


def _diffusers_unet():
    torch.manual_seed(1)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=48,
                                attention_head_dim=8, norm_num_groups=32)


def test_unet_config_from_a_diffusers_unet_matches_its_diffusers_config():
    unet = _diffusers_unet()
    config = md.unet_config_from_diffusers_unet(unet.state_dict(), torch.float16)
    assert config["model_channels"] == 32 and config["channel_mult"] == [1, 2]
    assert config["num_res_blocks"] == [1, 1] and config["context_dim"] == 48
    assert config["transformer_depth"] == [1, 0] and config["dtype"] == torch.float16
    assert md.unet_config_from_diffusers_unet({"x": torch.zeros(1)}) is None


def test_unet_to_diffusers_covers_every_diffusers_key_with_the_right_shape():
    unet = _diffusers_unet()
    diffusers_sd = unet.state_dict()
    config = md.unet_config_from_diffusers_unet(diffusers_sd)
    key_map = comfy.utils.unet_to_diffusers(config)
    with torch.device("meta"):
        ours = UNetModel(md.unet_config_from_comfy(config)).state_dict()
    for key, value in diffusers_sd.items():
        assert key in key_map, key
        assert tuple(ours[key_map[key]].shape) == tuple(value.shape), key
    assert comfy.utils.unet_to_diffusers({}) == {}


def test_cldm_controlnet_from_comfyui_arguments_is_the_engine_network():
    torch.manual_seed(2)
    cfg = tiny_sd1_config()
    engine = EngineNetwork(controlnet_config_from_unet(cfg)).eval()
    config = md.model_config_from_unet(engine.state_dict(), "").unet_config
    config.pop("out_channels")
    net = CLDMControlNet(hint_channels=3, dtype=torch.float32, device="cpu", operations=None, **config).eval()
    net.load_state_dict(engine.state_dict(), strict=True)
    x, hint = torch.randn(2, 4, 8, 8), torch.rand(2, 3, 64, 64)
    t, ctx = torch.tensor([500.0, 20.0]), torch.randn(2, 5, cfg.context_dim)
    with torch.no_grad():
        a = net(x=x, hint=hint, timesteps=t, context=ctx)
        b = engine(x, hint, t, ctx)
    assert all(torch.equal(p, q) for p, q in zip(a["output"], b["output"]))
    assert torch.equal(a["middle"][0], b["middle"][0]) and len(a["output"]) == cfg.num_input_blocks
    with pytest.raises(ValueError, match="use_scale_shift_norm"):
        CLDMControlNet(hint_channels=3, use_scale_shift_norm=True, **config)
    with pytest.raises(ValueError, match="union_controlnet_num_control_type"):
        CLDMControlNet(hint_channels=3, union_controlnet_num_control_type=8, **config)


def test_module_patcher_wraps_a_pack_module_and_models_count_as_patchers(tiny_models):
    from comfy.model_patcher import ModelPatcher
    from model_management.checkpoints import load_checkpoint
    module = torch.nn.Linear(3, 2)
    patcher = ModelPatcher(module, load_device="cpu", offload_device="cpu")
    twin = patcher.clone()
    assert twin.model is module and twin.parent is patcher and patcher.is_clone(twin)
    assert patcher.model_size() == (3 * 2 + 2) * 4 and patcher.model_dtype() == torch.float32
    twin.set_attachments("k", 1)
    assert twin.get_attachment("k") == 1 and patcher.get_attachment("k") is None
    model = load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False).model
    assert isinstance(model, ModelPatcher) and isinstance(patcher, ModelPatcher)


def test_hooks_register_wrappers_and_refuse_what_does_not_run():
    from comfy import hooks
    from comfy.patcher_extension import WrappersMP, add_wrapper_with_key
    from model_management.hooks import control_hooks, register_hooks

    def wrapper(executor, *args, **kwargs):
        return executor(*args, **kwargs)

    wrappers = {}
    add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "pack", wrapper, transformer_options=wrappers)
    group = hooks.HookGroup()
    hook = hooks.WrapperHook(wrappers)
    group.add(hook)
    group.add(hook.clone())  # a clone is the same hook
    assert len(group) == 1 and group.get_type(hooks.EnumHookType.TransformerOptions) == [hook]

    class Control:
        extra_hooks, previous_controlnet = group, None

    class Below:
        extra_hooks, previous_controlnet = None, None

    top = Control()
    top.previous_controlnet = Below()
    found = control_hooks([top])
    options = {"transformer_options": {}}
    registered = register_hooks(found, None, options)
    assert len(registered) == 1 and options["registered_hooks"] is registered
    assert options["transformer_options"]["wrappers"][WrappersMP.OUTER_SAMPLE]["pack"] == [wrapper]
    hook.custom_should_register = lambda *a: False  # a hook may decline
    assert len(register_hooks(found, None, {"transformer_options": {}})) == 0
    weights = hooks.HookGroup()
    weights.add(hooks.WeightHook())
    with pytest.raises(NotImplementedError, match="weight"):
        register_hooks(weights, None, {})


def test_a_wrapper_hook_on_a_control_wraps_the_sampler_run(tiny_models, tmp_path):
    from comfy import hooks
    from comfy.patcher_extension import WrappersMP, add_wrapper_with_key
    from diffusion.controlnet.control import ControlRuntime
    from model_management.checkpoints import load_checkpoint
    from model_management.control_files import control_model_from_state_dict
    from model_management.synthetic_controlnets import make_controlnet
    from nodes.sampling import common_ksampler
    seen = []

    def wrapper(executor, *args, **kwargs):
        guider = executor.class_obj
        seen.append(sum(1 for conds in guider.conds.values() for c in conds if "control" in c))
        return executor(*args, **kwargs)

    wrappers = {}
    add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "pack", wrapper, transformer_options=wrappers)
    group = hooks.HookGroup()
    group.add(hooks.WrapperHook(wrappers))
    loaded = load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False)
    control = ControlRuntime(control_model_from_state_dict(make_controlnet("sd1", seed=1)), torch.rand(1, 64, 64, 3))
    control.extra_hooks = group
    width = loaded.model.unet.config.context_dim
    cond = [[torch.randn(1, 77, width), {"control": control}]]
    uncond = [[torch.randn(1, 77, width), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    common_ksampler(None, loaded.model, 3, 2, 4.0, "euler", "normal", cond, uncond, latent)
    assert seen == [1]  # the hook's wrapper ran once, around the run, and saw the control on the positive
    common_ksampler(None, loaded.model, 3, 2, 4.0, "euler", "normal", uncond, uncond, latent)
    assert seen == [1]  # without the control, nothing registers it
    assert not (loaded.model.model_options.get("transformer_options") or {}).get("wrappers")
