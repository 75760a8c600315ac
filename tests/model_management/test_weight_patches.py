"""WeightPatcher on a real (tiny) UNet and text stack: in-place patching, bit-exact restore, strengths, stacking,
dtypes, errors, and the out-of-place variant."""
import pytest
import torch

from model_management.checkpoints import load_checkpoint
from model_management.weight_patches import (DiffPatch, LohaPatch, LokrPatch, LoraPatch, PatchError, WeightPatcher,
                                             patched_state)

Q = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"  # [32, 32]
CONV = "input_blocks.1.0.in_layers.2.weight"  # [32, 32, 3, 3]
K2 = "middle_block.1.transformer_blocks.0.attn2.to_k.weight"  # [64, 64]


@pytest.fixture
def sd1(tiny_models):
    return load_checkpoint(tiny_models.checkpoint("sd1"), want_vae=False)


def snapshot(module):
    return {n: t.detach().clone() for n, t in module.state_dict(keep_vars=True).items()}


def same(module, before):
    state = module.state_dict(keep_vars=True)
    return set(state) == set(before) and all(torch.equal(state[n], before[n]) for n in before)


def lora_for(shape, seed, rank=2, alpha=1.0):
    g = torch.Generator().manual_seed(seed)
    if len(shape) == 4:
        up, down = torch.randn(shape[0], rank, 1, 1, generator=g), torch.randn(rank, *shape[1:], generator=g)
    else:
        up, down = torch.randn(shape[0], rank, generator=g), torch.randn(rank, shape[1], generator=g)
    return LoraPatch(up, down, alpha)


def unet_out(model):
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 77, 64, generator=g)
    with torch.no_grad():
        return model.forward(x, torch.tensor([500.0]), ctx)


def test_apply_then_restore_is_bit_exact_on_every_parameter(sd1):
    unet = sd1.model.unet
    before, out_before = snapshot(unet), unet_out(sd1.model)
    params = dict(unet.named_parameters())
    patches = [(n, lora_for(p.shape, i), 0.8) for i, (n, p) in enumerate(params.items())
               if n.endswith(".weight") and p.ndim in (2, 4)]
    patches.append(("out.2.bias", DiffPatch(torch.randn(4)), 1.0))
    patcher = WeightPatcher(unet, patches)
    stats = patcher.apply()
    assert patcher.applied and stats.parameters == len(patches)
    assert stats.backup_bytes == sum(params[n].numel() * 4 for n, _, _ in patches)
    assert stats.apply_seconds > 0
    assert not torch.equal(unet_out(sd1.model), out_before)
    patcher.restore()
    assert not patcher.applied and patcher._backups == {}
    assert same(unet, before)
    assert torch.equal(unet_out(sd1.model), out_before)
    patcher.apply()  # reusable after a restore
    patcher.restore()
    assert same(unet, before)


def test_strength_zero_changes_nothing(sd1):
    before, out_before = snapshot(sd1.model.unet), unet_out(sd1.model)
    patcher = WeightPatcher(sd1.model.unet, [(Q, lora_for((32, 32), 1), 0.0), (CONV, lora_for((32, 32, 3, 3), 2), 0)])
    stats = patcher.apply()
    assert stats.parameters == 0 and stats.skipped_zero_strength == 2 and stats.backup_bytes == 0
    assert same(sd1.model.unet, before)
    assert torch.equal(unet_out(sd1.model), out_before)
    patcher.restore()


def test_stacked_loras_add_their_deltas(sd1):
    unet = sd1.model.unet
    w = {n: unet.get_parameter(n).detach().clone() for n in (Q, CONV)}
    a, b = lora_for((32, 32), 3, rank=4, alpha=2.0), lora_for((32, 32), 4, rank=2, alpha=None)
    c = lora_for((32, 32, 3, 3), 5)
    patcher = WeightPatcher(unet, [(Q, a, 0.7), (Q, b, -0.3), (CONV, c, 1.2), (Q, DiffPatch(torch.ones(32, 32)), 0.1)])
    assert patcher.apply().parameters == 2
    delta_a = (a.up @ a.down) * 2.0 / 4
    delta_b = b.up @ b.down  # no alpha: scale 1
    expected = w[Q] + 0.7 * delta_a - 0.3 * delta_b + 0.1
    assert torch.allclose(unet.get_parameter(Q), expected, atol=1e-5)
    expected_conv = w[CONV] + 1.2 * (c.up.flatten(1) @ c.down.flatten(1)).reshape(32, 32, 3, 3) * 0.5
    assert torch.allclose(unet.get_parameter(CONV), expected_conv, atol=1e-5)
    patcher.restore()
    assert torch.equal(unet.get_parameter(Q), w[Q]) and torch.equal(unet.get_parameter(CONV), w[CONV])


def test_applying_twice_is_an_error(sd1):
    patcher = WeightPatcher(sd1.model.unet, [(Q, lora_for((32, 32), 6), 1.0)])
    patcher.apply()
    with pytest.raises(RuntimeError, match="already applied"):
        patcher.apply()
    patcher.restore()
    patcher.restore()  # a second restore is harmless


def test_fp16_module_stays_fp16_with_one_rounding(sd1):
    unet = sd1.model.unet.half()
    before = snapshot(unet)
    lora = lora_for((64, 64), 7)
    patcher = WeightPatcher(unet, [(K2, lora, 0.9)])
    patcher.apply()
    patched = unet.get_parameter(K2)
    assert patched.dtype == torch.float16
    expected = (before[K2].float() + 0.9 * (lora.up @ lora.down) * 0.5).half()
    assert torch.equal(patched, expected)
    assert all(p.dtype == torch.float16 for p in unet.parameters())
    patcher.restore()
    assert same(unet, before)


def test_bf16_factors_are_computed_in_float32(sd1):
    unet = sd1.model.unet
    w = unet.get_parameter(Q).detach().clone()
    lora = lora_for((32, 32), 8)
    half = LoraPatch(lora.up.bfloat16(), lora.down.bfloat16(), lora.alpha)
    patcher = WeightPatcher(unet, [(Q, half, 1.0)])
    patcher.apply()
    expected = w + (half.up.float() @ half.down.float()) * 0.5
    assert unet.get_parameter(Q).dtype == torch.float32
    assert torch.allclose(unet.get_parameter(Q), expected, atol=1e-6)
    patcher.restore()


def test_a_bad_patch_leaves_the_module_untouched(sd1):
    unet = sd1.model.unet
    before = snapshot(unet)
    patcher = WeightPatcher(unet, [(Q, lora_for((32, 32), 9), 1.0), (CONV, lora_for((64, 64), 10), 1.0)])
    with pytest.raises(PatchError, match="in_layers.2.weight"):
        patcher.apply()
    assert not patcher.applied and same(unet, before)
    with pytest.raises(PatchError, match="no parameter"):
        WeightPatcher(unet, [("nope.weight", DiffPatch(torch.zeros(1)), 1.0)]).apply()
    assert same(unet, before)


def test_patched_state_leaves_the_module_alone_and_matches_apply(sd1):
    unet = sd1.model.unet
    before = snapshot(unet)
    patches = [(Q, lora_for((32, 32), 11), 0.5), (CONV, lora_for((32, 32, 3, 3), 12), 1.0), (K2, None, 0.0)]
    state = patched_state(unet, patches)
    assert set(state) == {Q, CONV} and same(unet, before)
    from_mapping = patched_state(dict(unet.named_parameters()), patches)
    assert all(torch.equal(state[n], from_mapping[n]) for n in state)
    patcher = WeightPatcher(unet, patches, backup_device="cpu")
    patcher.apply()
    assert all(torch.equal(unet.get_parameter(n), state[n]) for n in state)
    patcher.restore()
    assert same(unet, before)


def test_text_stack_patch_changes_the_encoding_and_restores(tiny_models):
    clip = load_checkpoint(tiny_models.checkpoint("sdxl"), want_model=False, want_vae=False).clip
    before = snapshot(clip.stack)
    cond, pooled, _ = clip.encode("a red fox")
    names = [n for n, p in clip.stack.named_parameters() if n.endswith(("fc1.weight", "q_proj.weight"))]
    names.append("encoders.1.model.text_projection.weight")
    params = dict(clip.stack.named_parameters())
    patcher = WeightPatcher(clip.stack, [(n, lora_for(params[n].shape, i), 1.0) for i, n in enumerate(names)])
    patcher.apply()
    cond2, pooled2, _ = clip.encode("a red fox")
    assert not torch.allclose(cond, cond2) and not torch.allclose(pooled, pooled2)
    patcher.restore()
    assert same(clip.stack, before)
    cond3, pooled3, _ = clip.encode("a red fox")
    assert torch.equal(cond, cond3) and torch.equal(pooled, pooled3)


def test_alias_names_patch_a_tensor_once(tiny_models):
    stack = load_checkpoint(tiny_models.checkpoint("sdxl"), want_model=False, want_vae=False).clip.stack
    name = "encoders.1.model.text_projection.weight"
    alias = "pooled_encoder.model.text_projection.weight"
    assert stack.get_parameter(alias) is stack.get_parameter(name)
    w = stack.get_parameter(name).detach().clone()
    ones = DiffPatch(torch.ones_like(w))
    patcher = WeightPatcher(stack, [(name, ones, 1.0), (alias, ones, 1.0)])
    assert patcher.apply().parameters == 1
    assert torch.allclose(stack.get_parameter(name), w + 2.0)
    patcher.restore()
    assert torch.equal(stack.get_parameter(name), w)


def test_delta_formulas_on_small_shapes():
    g = torch.Generator().manual_seed(13)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    up, mid, down = rnd(6, 3, 1, 1), rnd(3, 3, 3, 3), rnd(3, 4, 1, 1)
    d = LoraPatch(up, down, 1.5, mid).delta((6, 4, 3, 3))
    ref = torch.stack([torch.stack([up[:, :, 0, 0] @ mid[:, :, h, w] @ down[:, :, 0, 0] for w in range(3)], -1)
                       for h in range(3)], -2)
    assert torch.allclose(d, ref * 0.5, atol=1e-5)
    w1a, w1b, w2a, w2b = rnd(5, 2), rnd(2, 7), rnd(5, 2), rnd(2, 7)
    assert torch.allclose(LohaPatch(w1a, w1b, w2a, w2b, 4.0).delta((5, 7)), (w1a @ w1b) * (w2a @ w2b) * 2.0)
    w1, w2 = rnd(2, 3), rnd(4, 5)
    k = LokrPatch(w1=w1, w2=w2, alpha=99.0).delta((8, 15), torch.float16)
    assert k.dtype == torch.float16
    assert torch.allclose(k.float(), torch.kron(w1, w2).half().float())
    with pytest.raises(PatchError):
        LoraPatch(rnd(4, 2), rnd(2, 4)).delta((5, 4))
    with pytest.raises(PatchError, match="ranks differ"):
        LoraPatch(rnd(4, 2), rnd(3, 4)).delta((4, 4))
