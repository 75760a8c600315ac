"""comfy.samplers / comfy.sample / comfy.k_diffusion / node_helpers / comfy_extras / comfy.lora as packs use them,
each backed by the engine: the same latents as our own KSampler for the same inputs."""
import torch

from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, prepare_noise, sample
from model_management.checkpoints import load_checkpoint


def _model(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False).model


def _conds(model):
    g = torch.Generator().manual_seed(3)
    dim = model.unet.config.context_dim
    return [[torch.randn(1, 77, dim, generator=g), {}]], [[torch.randn(1, 77, dim, generator=g), {}]]


def test_comfy_sample_matches_our_ksampler(bound, tiny_models):
    import comfy.sample
    import comfy.samplers
    model = _model(tiny_models)
    positive, negative = _conds(model)
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 11)
    assert torch.equal(noise, prepare_noise(latent, 11))
    got = comfy.sample.sample(model, noise, 3, 4.0, "euler", "karras", positive, negative, latent, seed=11)
    want, _ = sample(model, noise, positive, negative, 4.0, SamplerChoice("euler"),
                     calculate_sigmas(model, "karras", 3), latent, 11)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert "euler" in comfy.samplers.KSampler.SAMPLERS and "karras" in comfy.samplers.KSampler.SCHEDULERS
    ks = comfy.samplers.KSampler(model, steps=3, device="cpu", sampler="euler", scheduler="karras")
    torch.testing.assert_close(ks.sample(noise, positive, negative, 4.0, latent_image=latent, seed=11), want,
                               rtol=0, atol=0)
    sigmas = comfy.samplers.calculate_sigmas(model.model_sampling, "karras", 3)
    torch.testing.assert_close(sigmas, calculate_sigmas(model, "karras", 3))


def test_custom_ksampler_function_and_guider_subclass(bound, tiny_models):
    import comfy.samplers
    from comfy.k_diffusion import sampling as k
    model = _model(tiny_models)
    positive, negative = _conds(model)
    latent = torch.zeros(1, 4, 8, 8)
    noise = prepare_noise(latent, 5)
    sigmas = calculate_sigmas(model, "normal", 2)
    calls = []

    def my_sampler(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        calls.append(disable)
        return k.sample_euler(model_k, x, sigmas, extra_args=extra_args, callback=callback, disable=disable)

    custom = comfy.samplers.KSAMPLER(my_sampler)
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(3.0)
    got = guider.sample(noise, latent, custom, sigmas, seed=5)
    want, _ = sample(model, noise, positive, negative, 3.0, SamplerChoice("euler"), sigmas, latent, 5)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert calls == [True]

    class HalfGuider(comfy.samplers.CFGGuider):
        def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 - ComfyUI's signature
            return super().predict_noise(x, timestep, model_options, seed) * 0.5

    half = HalfGuider(model)
    half.set_conds(positive, negative)
    half.set_cfg(3.0)
    assert not torch.allclose(half.sample(noise, latent, custom, sigmas, seed=5), want)


def test_sampling_function_is_cfg(bound, tiny_models):
    import comfy.samplers
    model = _model(tiny_models)
    positive, negative = _conds(model)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([2.0])
    cond, uncond = comfy.samplers.calc_cond_batch(model.model, [positive, negative], x, sigma, {})
    guided = comfy.samplers.sampling_function(model.model, x, sigma, negative, positive, 6.0)
    torch.testing.assert_close(guided, uncond + (cond - uncond) * 6.0, rtol=1e-5, atol=1e-5)


def test_node_helpers_and_extras(bound):
    import comfy_extras.nodes_custom_sampler as ncs
    import comfy_extras.nodes_mask as nm
    import node_helpers
    cond = [[torch.zeros(1, 2, 3), {"a": 1}]]
    out = node_helpers.conditioning_set_values(cond, {"strength": 0.5})
    assert out[0][1] == {"a": 1, "strength": 0.5} and cond[0][1] == {"a": 1}
    assert node_helpers.string_to_torch_dtype("bf16") is torch.bfloat16
    assert node_helpers.string_to_torch_dtype("fp8") is None  # unknown names mean "the caller's default"
    appended = node_helpers.conditioning_set_values([[torch.zeros(1), {"ids": [1]}]], {"ids": [2], "new": [3]},
                                                    append=True)
    assert appended[0][1] == {"ids": [1, 2], "new": [3]}
    assert node_helpers.hasher()().name == "sha256"
    noise = ncs.Noise_RandomNoise(4).generate_noise({"samples": torch.zeros(1, 4, 2, 2)})
    assert torch.equal(noise, prepare_noise(torch.zeros(1, 4, 2, 2), 4))
    assert ncs.SamplerCustom.FUNCTION and ncs.BasicScheduler
    dest, src = torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 2, 2)
    nm.composite(dest, src, 16, 8, None, 8)  # latent units: x=2, y=1 cells
    assert dest[0, 0, 1:3, 2:4].eq(1).all() and dest.sum() == 4 * 4


def test_common_ksampler_and_class_attributes(bound, tiny_models):
    import nodes
    model = _model(tiny_models)
    positive, negative = _conds(model)
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = nodes.common_ksampler(model, 9, 2, 3.0, "euler", "normal", positive, negative, latent)
    want, _ = sample(model, prepare_noise(latent["samples"], 9), positive, negative, 3.0, SamplerChoice("euler"),
                     calculate_sigmas(model, "normal", 2), latent["samples"], 9)
    torch.testing.assert_close(out["samples"], want, rtol=0, atol=0)
    assert "lanczos" in nodes.ImageScale.upscale_methods and "center" in nodes.ImageScale.crop_methods


def test_comfy_lora_keys_and_patches(bound, tiny_models):
    import comfy.lora
    model = _model(tiny_models)
    key_map = comfy.lora.model_lora_keys_unet(model)
    target = "diffusion_model.input_blocks.1.1.proj_in.weight"
    assert key_map["lora_unet_input_blocks_1_1_proj_in"] == target
    weight = model.unet.get_parameter("input_blocks.1.1.proj_in.weight")
    rank = 2
    sd = {"lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.ones(weight.shape[0], rank, 1, 1),
          "lora_unet_input_blocks_1_1_proj_in.lora_down.weight": torch.ones(rank, weight.shape[1], 1, 1) * 0.01,
          "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(float(rank))}
    patches = comfy.lora.load_lora(sd, key_map)
    assert list(patches) == [target]
    patched = model.clone()
    assert patched.add_patches(patches, 1.0) == [target]
    assert len(patched.patches) == 1 and not model.patches
    assert comfy.lora.model_lora_keys_unet(model.model) == key_map  # packs pass the model.model view too


def test_comfy_lora_clip_keys_are_comfyui_names(bound, tiny_models):
    """As Inspire's LoRA Block Weight loads a LoRA: key maps for model.model and clip.cond_stage_model, load_lora,
    then add_patches on clones by ComfyUI's names."""
    import comfy.lora
    from model_management.checkpoints import load_checkpoint
    clip = load_checkpoint(tiny_models.checkpoint("sd1")).clip
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model)
    target = "clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    assert key_map["lora_te_text_model_encoder_layers_0_self_attn_q_proj"] == target
    q = clip.model_state_dict()[target]
    sd = {"lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": torch.ones(q.shape[0], 2),
          "lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": torch.ones(2, q.shape[1]) * 0.05}
    patches = comfy.lora.load_lora(sd, key_map)
    patched = clip.clone()
    assert patched.add_patches(patches, 1.0) == [target]
    assert not torch.allclose(patched.encode("a cat")[0], clip.encode("a cat")[0])


def test_optimized_attention_layouts_agree(bound):
    from comfy.ldm.modules.attention import optimized_attention
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 5, 3 * 4, generator=g) for _ in range(3))
    flat = optimized_attention(q, k, v, 3)
    split = lambda t: t.view(2, -1, 3, 4).transpose(1, 2)  # noqa: E731
    want = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    torch.testing.assert_close(flat, want.transpose(1, 2).reshape(2, 5, 12))
    torch.testing.assert_close(optimized_attention(split(q), split(k), split(v), 3, skip_reshape=True), flat)
    torch.testing.assert_close(optimized_attention(q, k, v, 3, skip_output_reshape=True), want)


def test_clip_preprocess_crops_the_short_side_and_normalises(bound):
    from comfy.clip_vision import CLIP_MEAN, CLIP_STD, clip_preprocess
    image = torch.zeros(1, 100, 200, 3)
    image[:, :, :50] = 1.0  # the left quarter white: cropped away by the centre crop
    out = clip_preprocess(image, size=32)
    assert out.shape == (1, 3, 32, 32)
    black = (0.0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[0, :, :, 8:24].mean(dim=(1, 2)), black, rtol=1e-4, atol=1e-4)


def test_cli_args_follow_the_server_settings(bound):
    services, _ = bound
    from comfy.cli_args import LatentPreviewMethod, args
    services.settings["cpu"] = True
    services.settings["preview_method"] = "latent2rgb"
    assert args.cpu is True and args.preview_method is LatentPreviewMethod.Latent2RGB
    assert args.disable_smart_memory is False  # ComfyUI's default where Tessera has no such flag


def test_comfy_submodules_and_missing_names(bound):
    import comfy
    import comfy_extras.nodes_sag
    import pytest
    assert comfy.samplers.KSampler is not None  # `import comfy` alone reaches submodules
    with pytest.raises(AttributeError, match="SelfAttentionGuidance"):  # a node Tessera does not have
        comfy_extras.nodes_sag.SelfAttentionGuidance
