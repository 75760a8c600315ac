"""The control runtime: strength, the start/end window, stacking, hint preparation, and family checks -- on a tiny
real-layout SD1 model and ControlNet, through the same Guidance code the samplers use."""
import pytest
import torch

from diffusion.controlnet.control import ControlRuntime, add_residuals
from model_management.control_files import control_model_from_state_dict
from model_management.synthetic_controlnets import make_controlnet
from diffusion.sampling.guidance import Guidance, prepare_conditioning


@pytest.fixture(scope="module")
def nets():
    return {seed: control_model_from_state_dict(make_controlnet("sd1", seed=seed)) for seed in (1, 2)}


def _image(seed=0, h=48, w=40):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(seed))


def _call(runtime, model, sigma=3.0, shape=(2, 4, 6, 5)):
    g = torch.Generator().manual_seed(5)
    x_in = torch.randn(*shape, generator=g)
    ctx = torch.randn(shape[0], 3, model.unet.config.context_dim, generator=g)
    s = torch.full((shape[0],), sigma)
    t = model.model_sampling.timestep(s)
    return runtime.residuals(x_in, t, [], s, context=ctx, y=None, model=model)


def _flat(res):
    return [r for key in sorted(res) for r in res[key]]


def test_strength_scales_and_zero_strength_adds_nothing(nets, tiny_sd1_model):
    image = _image()
    one = _flat(_call(ControlRuntime(nets[1], image, 1.0), tiny_sd1_model))
    half = _flat(_call(ControlRuntime(nets[1], image, 0.5), tiny_sd1_model))
    zero = _flat(_call(ControlRuntime(nets[1], image, 0.0), tiny_sd1_model))
    assert len(one) == tiny_sd1_model.unet.config.num_input_blocks + 1
    assert all(r.abs().max() > 0 for r in one)
    assert all(torch.allclose(h, o * 0.5) for h, o in zip(half, one))
    assert all(not z.any() for z in zero)


def _denoise(model, cond, control, sigma=2.0):
    entries = prepare_conditioning([[cond, {"control": control}]], torch.Size([1, 4, 6, 5]), model)
    guidance = Guidance(model, entries, None, 1.0)
    x = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(9)) * sigma
    with torch.inference_mode():
        return guidance.denoise(x, torch.tensor([sigma]))


def test_guidance_with_zero_strength_equals_no_control(nets, tiny_sd1_model):
    cond = torch.randn(1, 4, tiny_sd1_model.unet.config.context_dim, generator=torch.Generator().manual_seed(3))
    plain = _denoise(tiny_sd1_model, cond, None)
    assert torch.equal(_denoise(tiny_sd1_model, cond, ControlRuntime(nets[1], _image(), 0.0)), plain)
    steered = _denoise(tiny_sd1_model, cond, ControlRuntime(nets[1], _image(), 1.0))
    assert (steered - plain).abs().max() > 1e-3


def test_start_end_window(nets, tiny_sd1_model):
    sampling = tiny_sd1_model.model_sampling
    runtime = ControlRuntime(nets[1], _image(), 1.0, start_percent=0.25, end_percent=0.5)
    low, high = runtime.sigma_range(tiny_sd1_model)
    assert low == pytest.approx(sampling.percent_to_sigma(0.5)) and high == pytest.approx(
        sampling.percent_to_sigma(0.25))
    assert _call(runtime, tiny_sd1_model, sigma=sampling.sigma_max) is None  # before the window
    assert _call(runtime, tiny_sd1_model, sigma=sampling.sigma_min) is None  # after it
    inside = _call(runtime, tiny_sd1_model, sigma=(low * high) ** 0.5)
    assert inside is not None and _flat(inside)[0].abs().max() > 0
    full = ControlRuntime(nets[1], _image(), 1.0)
    assert _call(full, tiny_sd1_model, sigma=sampling.sigma_max) is not None
    with pytest.raises(ValueError, match="start_percent"):
        ControlRuntime(nets[1], _image(), 1.0, start_percent=0.8, end_percent=0.2)


def test_stacked_controls_sum(nets, tiny_sd1_model):
    a = ControlRuntime(nets[1], _image(0), 0.7)
    b_alone = ControlRuntime(nets[2], _image(1), 1.3)
    b_on_a = ControlRuntime(nets[2], _image(1), 1.3, previous=a)
    assert b_on_a.chain() == [b_on_a, a]
    ra, rb, both = (_flat(_call(r, tiny_sd1_model)) for r in (a, b_alone, b_on_a))
    for x, y, s in zip(ra, rb, both):
        assert torch.allclose(s, x + y, atol=1e-6)
    # outside the top one's window only the previous contributes
    late = ControlRuntime(nets[2], _image(1), 1.0, start_percent=0.9, end_percent=1.0, previous=a)
    sigma_max = tiny_sd1_model.model_sampling.sigma_max
    assert all(torch.equal(x, y) for x, y in zip(_flat(_call(late, tiny_sd1_model, sigma_max)),
                                                 _flat(_call(a, tiny_sd1_model, sigma_max))))


def test_add_residuals_handles_missing_entries():
    t = torch.ones(2)
    merged = add_residuals({"output": [t, None], "middle": t}, {"output": [None, t], "input": [t, t]})
    assert torch.equal(merged["output"][0], t) and torch.equal(merged["output"][1], t)
    assert torch.equal(merged["middle"][0], t) and len(merged["input"]) == 2
    with pytest.raises(ValueError, match="different models"):
        add_residuals({"output": [t]}, {"output": [t, t]})


def test_hint_is_center_cropped_resized_and_cycled_over_the_batch(nets):
    wide = torch.zeros(2, 16, 32, 3)
    wide[0, :, 8:24] = 1.0  # the centre half of image 0 is white; image 1 stays black
    runtime = ControlRuntime(nets[1], wide, 1.0)
    hint = runtime.prepared_hint(torch.zeros(4, 4, 2, 2))  # square latent, 2 images for a batch of 4
    assert hint.shape == (4, 3, 16, 16)
    assert hint[0].eq(1.0).all() and hint[2].eq(1.0).all()  # centre crop kept only the white part
    assert not hint[1].any() and not hint[3].any()
    assert runtime.prepared_hint(torch.zeros(4, 4, 2, 2)) is hint  # cached for the same batch shape
    gray = ControlRuntime(nets[1], torch.full((1, 8, 8, 1), 0.25), 1.0).prepared_hint(torch.zeros(1, 4, 1, 1))
    assert gray.shape == (1, 3, 8, 8) and torch.all(gray == 0.25)


def test_family_mismatch_is_named(nets, tiny_sdxl_model):
    runtime = ControlRuntime(nets[1], _image(), 1.0)
    with pytest.raises(ValueError, match="sd1.*sdxl"):
        _call(runtime, tiny_sdxl_model)
    with pytest.raises(ValueError, match="context"):
        nets[1].check_model(tiny_sdxl_model)


def test_sdxl_controlnet_steers_the_sdxl_model(tiny_sdxl_model):
    net = control_model_from_state_dict(make_controlnet("sdxl", layout="diffusers", seed=4))
    assert net.family == "sdxl"
    g = torch.Generator().manual_seed(2)
    cond = torch.randn(1, 4, tiny_sdxl_model.unet.config.context_dim, generator=g)
    opts = {"pooled_output": torch.randn(1, 32, generator=g)}
    outs = []
    for control in (None, ControlRuntime(net, _image(), 1.0)):
        entries = prepare_conditioning([[cond, dict(opts, control=control)]], torch.Size([1, 4, 6, 5]),
                                       tiny_sdxl_model)
        x = torch.randn(1, 4, 6, 5, generator=torch.Generator().manual_seed(9))
        with torch.inference_mode():
            outs.append(Guidance(tiny_sdxl_model, entries, None, 1.0).denoise(x, torch.tensor([1.5])))
    assert (outs[1] - outs[0]).abs().max() > 1e-3
