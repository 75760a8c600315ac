"""The ModelPatcher face of MODEL: patches packs attach through it change sampling as ComfyUI's do, on clones only,
and leave the model as it was afterwards."""
import pytest
import torch
import torch.nn.functional as F

from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, prepare_noise, sample
from model_management.checkpoints import load_checkpoint
from model_management.patcher_extension import CallbacksMP, WrappersMP


@pytest.fixture(scope="module")
def model(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1"), want_clip=False, want_vae=False).model


def conds(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    dim = model.unet.config.context_dim
    return [[torch.randn(1, 77, dim, generator=g), {}]], [[torch.randn(1, 77, dim, generator=g), {}]]


def run(model, cfg=5.0, steps=3, mask=None):
    positive, negative = conds(model)
    latent = torch.zeros(1, 4, 8, 8)
    sigmas = calculate_sigmas(model, "normal", steps)
    out, _ = sample(model, prepare_noise(latent, 7), positive, negative, cfg, SamplerChoice("euler"), sigmas,
                    latent, 7, noise_mask=mask)
    return out


def sdpa(q, k, v, extra):
    """Plain attention from the projections, as a pack's replacement would compute it."""
    b, n, inner = q.shape
    h = extra["n_heads"]
    split = lambda t: t.view(b, t.shape[1], h, -1).transpose(1, 2)  # noqa: E731
    return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, n, inner)


def test_pass_through_patches_leave_the_image_unchanged(model):
    plain = run(model)
    m = model.clone()
    m.set_model_attn1_patch(lambda n, c, v, extra: (n, c, v))
    for kind in ("input", "output"):
        for number in range(12):
            m.set_model_attn2_replace(sdpa, kind, number)
    m.set_model_attn1_replace(sdpa, "middle", 0)
    torch.testing.assert_close(run(m), plain, rtol=1e-5, atol=1e-5)


def test_attention_patch_changes_the_image_and_only_on_the_clone(model):
    plain = run(model)
    seen = []

    def weaker(q, k, v, extra):
        seen.append((extra["block"], extra["block_index"], extra["n_heads"], extra["dim_head"],
                     tuple(extra["cond_or_uncond"])))
        return sdpa(q, k, v, extra) * 0.5

    m = model.clone()
    m.set_model_attn2_replace(weaker, "input", 1)
    patched = run(m)
    assert not torch.allclose(patched, plain, atol=1e-4)
    assert seen and all(s[0] == ("input", 1) and s[1] == 0 for s in seen)
    heads = model.unet.input_blocks[1][1].transformer_blocks[0].attn2.heads
    assert seen[0][2] == heads and seen[0][4] == (0, 1)  # cond and uncond batched together
    assert "patches_replace" not in model.model_options["transformer_options"]
    torch.testing.assert_close(run(model), plain, rtol=0, atol=0)  # nothing left behind


def test_block_patches_run_at_every_block(model):
    calls = {"in": [], "out": [], "emb": 0}
    m = model.clone()
    m.set_model_input_block_patch(lambda h, opts: calls["in"].append(opts["block"]) or h)
    m.set_model_output_block_patch(lambda h, skip, opts: (calls["out"].append(opts["block"]) or h, skip))

    def emb_patch(emb, channels, opts):
        calls["emb"] += 1
        return emb
    m.set_model_emb_patch(emb_patch)
    run(m, steps=1)
    n = len(model.unet.input_blocks)
    assert calls["in"] == [("input", i) for i in range(n)]
    assert calls["out"] == [("output", i) for i in range(len(model.unet.output_blocks))]
    assert calls["emb"] == 1


def test_output_block_patch_that_drops_skips_changes_the_image(model):
    m = model.clone()
    m.set_model_output_block_patch(lambda h, skip, opts: (h, skip * 0.0))
    assert not torch.allclose(run(m), run(model), atol=1e-4)


def test_cfg_functions_get_comfyui_arguments(model):
    got = {}

    def cond_only(args):
        got.update(args)
        return args["cond"]  # the conditional noise prediction: like cfg 1

    m = model.clone()
    m.set_model_sampler_cfg_function(cond_only)
    result = run(m, cfg=5.0)
    assert {"cond", "uncond", "cond_scale", "sigma", "input", "cond_denoised", "uncond_denoised", "model"} <= set(got)
    assert got["cond_scale"] == 5.0
    torch.testing.assert_close(got["cond"], got["input"] - got["cond_denoised"])
    assert got["model"].diffusion_model is model.unet
    torch.testing.assert_close(result, run(model, cfg=1.0), rtol=1e-4, atol=1e-4)


def test_post_cfg_function_replaces_the_result(model):
    m = model.clone()
    m.set_model_sampler_post_cfg_function(lambda args: args["cond_denoised"])
    torch.testing.assert_close(run(m, cfg=5.0), run(model, cfg=1.0), rtol=1e-4, atol=1e-4)


def test_unet_function_wrapper_wraps_every_call(model):
    seen = []

    def wrapper(apply_model, args):
        seen.append(tuple(args["cond_or_uncond"]))
        return apply_model(args["input"], args["timestep"], **args["c"])

    m = model.clone()
    m.set_model_unet_function_wrapper(wrapper)
    torch.testing.assert_close(run(m, steps=2), run(model, steps=2), rtol=0, atol=0)
    assert seen == [(0, 1), (0, 1)]


def test_apply_model_and_diffusion_model_wrappers(model):
    order = []

    def outer(executor, *args, **kwargs):
        order.append("apply")
        return executor(*args, **kwargs) * 1.0

    def inner(executor, x, t, context, y, control, options):
        order.append("unet")
        return executor(x, t, context, y, control, options)

    m = model.clone()
    m.add_wrapper_with_key(WrappersMP.APPLY_MODEL, "test", outer)
    m.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, "test", inner)
    torch.testing.assert_close(run(m, steps=1), run(model, steps=1), rtol=0, atol=0)
    assert order == ["apply", "unet"]
    with pytest.raises(NotImplementedError, match="predict_noise"):  # a kind the engine does not run
        m.add_wrapper_with_key(WrappersMP.PREDICT_NOISE, "x", outer)


def test_outer_sample_wrapper_runs_around_the_whole_run_on_a_cloned_options(model):
    """As KJNodes' LatentInpaintTTM does: the wrapper adds an APPLY_MODEL wrapper to the guider's model_options for
    this run only, and may change what the run returns."""
    seen = {}

    def zero_apply(executor, *args, **kwargs):
        return executor(*args, **kwargs) * 0.0

    def outer(executor, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
              latent_shapes=None):
        guider = executor.class_obj
        seen.update(patcher=guider.model_patcher, shapes=latent_shapes, steps=len(sigmas) - 1, seed=seed)
        wrappers = guider.model_options["transformer_options"].setdefault("wrappers", {})
        wrappers.setdefault(WrappersMP.APPLY_MODEL, {})["run_only"] = [zero_apply]
        return executor(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                        latent_shapes=latent_shapes)

    m = model.clone()
    m.add_wrapper_with_key(WrappersMP.OUTER_SAMPLE, "test", outer)
    result = run(m, steps=2)
    assert seen["patcher"] is m and seen["shapes"] == [(1, 4, 8, 8)] and seen["steps"] == 2 and seen["seed"] == 7
    assert result.abs().max() < 1e-5  # every model call predicted 0 through the run-only wrapper
    assert "run_only" not in m.model_options["transformer_options"]["wrappers"].get(WrappersMP.APPLY_MODEL, {})
    assert not torch.equal(run(model, steps=2), result)


def test_scale_latent_inpaint_renoises_the_original(model):
    sigma = torch.tensor([2.0])
    noise, latent = torch.ones(1, 4, 2, 2), torch.full((1, 4, 2, 2), 0.5)
    torch.testing.assert_close(model.model.scale_latent_inpaint(x=None, sigma=sigma, noise=noise,
                                                                latent_image=latent), latent + noise * 2.0)


def test_callbacks_run_around_sampling(model):
    events = []
    m = model.clone()
    m.add_callback(CallbacksMP.ON_PRE_RUN, lambda patcher: events.append(("pre", patcher is m)))
    m.add_callback(CallbacksMP.ON_CLEANUP, lambda patcher: events.append(("cleanup", patcher is m)))
    run(m, steps=1)
    assert events == [("pre", True), ("cleanup", True)]


def test_object_patch_replaces_a_module_method_while_sampling(model):
    out_layer = model.unet.out[2]
    m = model.clone()
    m.add_object_patch("diffusion_model.out.2.forward", lambda h: torch.zeros(
        h.shape[0], out_layer.out_channels, *h.shape[2:], dtype=h.dtype))
    zero_eps = run(m, steps=1)
    assert "forward" not in out_layer.__dict__  # restored after the run
    assert not torch.allclose(zero_eps, run(model, steps=1))
    assert m.get_model_object("diffusion_model.out.2.forward") is m.object_patches["diffusion_model.out.2.forward"]
    assert m.get_model_object("diffusion_model") is model.unet


def test_add_patches_diff_and_merge_forms(model):
    key = "diffusion_model.out.2.weight"
    weight = model.unet.out[2].weight.detach().clone()
    plain = run(model, steps=1)
    m = model.clone()
    assert m.add_patches({key: ("diff", (torch.ones_like(weight) * 0.01,))}) == [key]
    assert not torch.allclose(run(m, steps=1), plain)
    assert torch.equal(model.unet.out[2].weight, weight)  # restored bit-exactly
    merged = model.clone()  # a 50/50 merge with itself is the same model
    merged.add_patches(model.get_key_patches("diffusion_model."), 0.5, 0.5)
    torch.testing.assert_close(run(merged, steps=1), plain, rtol=1e-4, atol=1e-4)
    kp = m.get_key_patches("diffusion_model.out.2")
    assert isinstance(kp[key], list) and torch.equal(kp[key][0][0], weight)


def test_denoise_mask_function_picks_the_mask_per_step(model):
    seen = []

    def mask_fn(sigma, mask, extra_options):
        seen.append(float(sigma.reshape(-1)[0]))
        assert extra_options["sigmas"] is not None
        return torch.zeros_like(mask)  # keep everything: the output is the input latent

    m = model.clone()
    m.set_model_denoise_mask_function(mask_fn)
    out = run(m, steps=2, mask=torch.ones(1, 8, 8))
    assert len(seen) == 2
    torch.testing.assert_close(out, torch.zeros(1, 4, 8, 8), rtol=0, atol=1e-5)


def test_clone_copies_options_and_model_view(model):
    m = model.clone()
    m.model_options["transformer_options"]["x"] = 1
    assert "x" not in model.model_options["transformer_options"]
    assert m.model.latent_format.scale_factor == pytest.approx(0.18215)
    assert m.model.model_sampling is m.model_sampling
    assert m.is_clone(model) and m.clone_has_same_weights(model)
    assert m.model_dtype() == model.dtype and str(m.load_device) == "cpu"


def test_attn1_patch_that_changes_its_input_changes_the_image(model):
    m = model.clone()
    m.set_model_attn1_patch(lambda n, context, value, extra: (n * 0.5, context, value))
    assert not torch.allclose(run(m, steps=1), run(model, steps=1), atol=1e-4)


def test_forward_timestep_embed_patch_handles_plain_layers(model):
    from diffusion.unet.resblock import Downsample
    seen = []

    def handler(layer, x, emb, context, options, out_size, *rest):
        seen.append(options["block"])
        return layer(x)

    m = model.clone()
    m.set_model_forward_timestep_embed_patch((Downsample, handler))
    torch.testing.assert_close(run(m, steps=1), run(model, steps=1), rtol=0, atol=0)
    downsamplers = [i for i, b in enumerate(model.unet.input_blocks) if isinstance(b[0], Downsample)]
    assert seen[:len(downsamplers)] == [("input", i) for i in downsamplers]


def test_patch_model_applies_weight_patches_until_unpatch(model):
    key = "diffusion_model.out.2.bias"
    bias = model.unet.out[2].bias.detach().clone()
    m = model.clone()
    m.add_patches({key: ("diff", (torch.ones_like(bias),))}, 0.5)
    unet = m.patch_model()
    torch.testing.assert_close(unet.out[2].bias, bias + 0.5)
    m.unpatch_model()
    assert torch.equal(model.unet.out[2].bias, bias)


def test_model_view_class_and_memory_estimate(model, tiny_models):
    from compat.comfy import model_base  # the classes packs test with isinstance
    sdxl = load_checkpoint(tiny_models.checkpoint("sdxl"), want_clip=False, want_vae=False).model
    assert isinstance(sdxl.model, model_base.SDXL) and not isinstance(model.model, model_base.SDXL)
    assert isinstance(model.model, model_base.BaseModel)
    one, two = model.memory_required([1, 4, 64, 64]), model.memory_required([2, 4, 64, 64])
    assert two > one > model.memory_required([1, 4, 32, 32])


def test_base_model_attributes_are_shared_like_comfyuis_base_model(model):
    m = model.clone()
    m.model.pack_flag = 3  # a fresh view each time, but one store per model family tree, as ComfyUI's BaseModel
    assert m.model.pack_flag == 3 and model.model.pack_flag == 3 and m.clone().model.pack_flag == 3
    del m.model.pack_flag
    assert not hasattr(model.model, "pack_flag")
    with pytest.raises(AttributeError):
        m.model.diffusion_model = None  # the view's own properties stay read-only


def test_prepare_sampling_wrapper_and_memory_usage_factor(model):
    """As KJNodes' ModelMemoryUsageFactorOverride: the wrapper hands the executor a clone with a changed
    memory_usage_factor, which scales the estimate the UNet is made resident with, and restores it."""
    seen = {}
    base = model.memory_required([2, 4, 8, 8])
    assert model.model.memory_usage_factor == 1.0  # SD1's, as ComfyUI's config says

    def prepare(executor, patcher, noise_shape, conds, model_options=None):
        twin = patcher.clone()
        twin.model.memory_usage_factor = 2.0
        try:
            seen["estimate"] = twin.memory_required([noise_shape[0] * 2] + list(noise_shape[1:]))
            seen["conds"] = sorted(conds)
            return executor(twin, noise_shape, conds, model_options=model_options)
        finally:
            twin.model.memory_usage_factor = 1.0

    m = model.clone()
    m.add_wrapper_with_key(WrappersMP.PREPARE_SAMPLING, "factor", prepare)
    out = run(m, steps=2)
    assert seen["estimate"] == pytest.approx(2 * base, rel=1e-6) and seen["conds"] == ["negative", "positive"]
    assert model.model.memory_usage_factor == 1.0 and torch.equal(out, run(model, steps=2))

    def replace(executor, patcher, noise_shape, conds, model_options=None):
        return executor(patcher, noise_shape, {"positive": [], "negative": []}, model_options=model_options)

    bad = model.clone()
    bad.add_wrapper_with_key(WrappersMP.PREPARE_SAMPLING, "replace", replace)
    with pytest.raises(NotImplementedError, match="replaced the conditioning"):
        run(bad, steps=1)
