"""LoRA-style files in every supported layout, written as real safetensors against the tiny models' real parameter
names: every key must map, junk must be reported, and the patched weights must follow the published formulas
(computed here independently). Diffusers names come from diffusers' own LDM converter, not from our mapping."""
import pytest
import torch
from safetensors.torch import save_file

from model_management.checkpoints import load_checkpoint
from model_management.diffusers_folder import diffusers_unet_key_to_ldm, ldm_unet_key_to_diffusers, unet_layout
from model_management.lora_formats import parse_lora, read_lora, text_aliases, unet_aliases
from model_management.weight_patches import WeightPatcher

RANK, ALPHA = 2, 1.0  # scale alpha / rank = 0.5 wherever alpha is written
TEXT_LINEAR = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1",
               "mlp.fc2")


class Model:
    """A loaded tiny checkpoint: its UNet, text stack and parameter names."""

    def __init__(self, tiny_models, family):
        loaded = load_checkpoint(tiny_models.checkpoint(family), want_vae=False)
        self.family = family
        self.unet = loaded.model.unet
        self.text = loaded.clip.stack
        self.unet_params = dict(self.unet.named_parameters())
        self.text_params = dict(self.text.named_parameters())

    def parse(self, state, tmp_path, name="lora.safetensors"):
        path = str(tmp_path / name)
        save_file({k: v.contiguous() for k, v in state.items()}, path)
        return read_lora(path, self.unet_params, self.text.state_dict(), self.family)

    def unet_targets(self):
        """Every linear and conv weight of the UNet."""
        return [n for n, p in self.unet_params.items() if n.endswith(".weight") and p.ndim in (2, 4)]

    def text_targets(self):
        """(encoder index, our name, transformers name) of the CLIP linears (and bigG's projection)."""
        out = []
        for name in self.text_params:
            parts = name.split(".")
            index, rest = int(parts[1]), ".".join(parts[3:])
            hf = rest if rest.startswith("text_") else "text_model." + rest
            if any(f".{t}.weight" in name for t in TEXT_LINEAR) or rest == "text_projection.weight":
                out.append((index, name, hf[:-len(".weight")]))
        return out


@pytest.fixture
def model(tiny_models, request):
    return Model(tiny_models, request.param)


def diffusers_names(unet):
    """LDM name -> diffusers name, by diffusers' own single-file converter (tensor identity)."""
    pytest.importorskip("diffusers")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    from diffusion.unet.config import detect_unet_config
    from tests.diffusion.unet.reference import diffusers_config
    state = unet.state_dict()
    converted = convert_ldm_unet_checkpoint({"model.diffusion_model." + k: v for k, v in state.items()},
                                            diffusers_config(detect_unet_config(state)))
    by_id = {id(v): k for k, v in state.items()}
    return {by_id[id(v)]: k for k, v in converted.items()}


def lora_factors(shape, generator):
    """(up, down) for a weight shape: linear [out, r] @ [r, in]; conv up [out, r, 1, 1], down [r, in, kh, kw]."""
    if len(shape) == 4:
        return (torch.randn(shape[0], RANK, 1, 1, generator=generator),
                torch.randn(RANK, *shape[1:], generator=generator))
    return torch.randn(shape[0], RANK, generator=generator), torch.randn(RANK, shape[1], generator=generator)


def lora_delta(up, down, shape, alpha=ALPHA):
    return (up.flatten(1) @ down.flatten(1)).reshape(shape) * (alpha / down.shape[0] if alpha else 1.0)


def add_lora(state, expected, file_name, our_name, shape, generator, style="kohya", alpha=ALPHA):
    """Write one layer's LoRA in `style` and record the delta it must produce on `our_name`."""
    up, down = lora_factors(shape, generator)
    if style == "kohya":
        state[f"{file_name}.lora_up.weight"], state[f"{file_name}.lora_down.weight"] = up, down
    elif style == "peft":
        state[f"{file_name}.lora_B.weight"], state[f"{file_name}.lora_A.weight"] = up, down
    elif style == "diffusers":
        state[f"{file_name}.lora.up.weight"], state[f"{file_name}.lora.down.weight"] = up, down
    elif style == "processor":  # file_name is the full key stem, e.g. "...attn1.processor.to_q_lora"
        state[f"{file_name}.up.weight"], state[f"{file_name}.down.weight"] = up, down
    if alpha is not None:
        state[f"{file_name}.alpha"] = torch.tensor(alpha)
    expected[our_name] = lora_delta(up, down, shape, alpha)


def check_patched(module, patches, expected, strength=0.75, atol=1e-5):
    """Apply, compare every touched weight with W + strength * dW and every other with W, restore bit-exactly."""
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    assert set(patches) == set(expected)
    patcher = WeightPatcher(module, [(n, p, strength) for n, p in patches.items()])
    stats = patcher.apply()
    assert stats.parameters == len(expected)
    for name, param in module.named_parameters():
        if name in expected:
            assert torch.allclose(param, before[name] + strength * expected[name], atol=atol), name
        else:
            assert torch.equal(param, before[name]), name
    patcher.restore()
    assert all(torch.equal(p, before[n]) for n, p in module.named_parameters())


def kohya_text(model, state, expected, generator, prefixes):
    for index, name, hf in model.text_targets():
        shape = model.text_params[name].shape
        add_lora(state, expected, prefixes[index] + hf.replace(".", "_"), name, shape, generator)


@pytest.mark.parametrize("model", ["sd1", "sd2"], indirect=True)
def test_kohya_with_diffusers_names(model, tmp_path):
    g = torch.Generator().manual_seed(0)
    names = diffusers_names(model.unet)
    state, unet_expected, text_expected = {}, {}, {}
    for name in model.unet_targets():
        flat = "lora_unet_" + names[name][:-len(".weight")].replace(".", "_")
        add_lora(state, unet_expected, flat, name, model.unet_params[name].shape, g)
    kohya_text(model, state, text_expected, g, {0: "lora_te_"})
    result = model.parse(state, tmp_path)
    assert result.unmatched == [] and result.problems == []
    assert result.kinds() == {"lora": len(unet_expected) + len(text_expected)}
    check_patched(model.unet, result.unet, unet_expected)
    check_patched(model.text, result.text, text_expected)


@pytest.mark.parametrize("model", ["sdxl"], indirect=True)
def test_kohya_with_ldm_names_and_both_text_encoders(model, tmp_path):
    g = torch.Generator().manual_seed(1)
    state, unet_expected, text_expected = {}, {}, {}
    for name in model.unet_targets():
        flat = "lora_unet_" + name[:-len(".weight")].replace(".", "_")
        add_lora(state, unet_expected, flat, name, model.unet_params[name].shape, g)
    kohya_text(model, state, text_expected, g, {0: "lora_te1_", 1: "lora_te2_"})
    assert "lora_te2_text_projection.lora_up.weight" in state
    assert any(k.startswith("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_k") for k in state)
    result = model.parse(state, tmp_path)
    assert result.unmatched == []
    assert {n.split(".")[1] for n in result.text} == {"0", "1"}
    check_patched(model.unet, result.unet, unet_expected)
    check_patched(model.text, result.text, text_expected)


@pytest.mark.parametrize("model", ["sdxl", "sd2"], indirect=True)
def test_peft_names_without_alpha(model, tmp_path):
    g = torch.Generator().manual_seed(2)
    names = diffusers_names(model.unet)
    state, unet_expected, text_expected = {}, {}, {}
    for name in model.unet_targets():
        if "transformer_blocks" in name:
            add_lora(state, unet_expected, "unet." + names[name][:-len(".weight")], name,
                     model.unet_params[name].shape, g, style="peft", alpha=None)
    prefixes = {0: "text_encoder.", 1: "text_encoder_2."}
    for index, name, hf in model.text_targets():
        add_lora(state, text_expected, prefixes[index] + hf, name, model.text_params[name].shape, g, style="peft",
                 alpha=None)
    result = model.parse(state, tmp_path)
    assert result.unmatched == []
    check_patched(model.unet, result.unet, unet_expected)
    check_patched(model.text, result.text, text_expected)


@pytest.mark.parametrize("model", ["sd1"], indirect=True)
def test_old_diffusers_attention_processor_names(model, tmp_path):
    g = torch.Generator().manual_seed(3)
    names = diffusers_names(model.unet)
    state, unet_expected, text_expected = {}, {}, {}
    old = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out.0": "to_out"}
    for name in model.unet_targets():
        stem = names[name][:-len(".weight")]
        for ours, theirs in old.items():
            if stem.endswith(f".{ours}") and ".attn" in stem:
                attn = stem[:-len(ours) - 1]
                add_lora(state, unet_expected, f"unet.{attn}.processor.{theirs}_lora", name,
                         model.unet_params[name].shape, g, style="processor", alpha=None)
        if stem.endswith(("proj_in", "ff.net.2")):  # the later `.lora.down.weight` style
            add_lora(state, unet_expected, "unet." + stem, name, model.unet_params[name].shape, g, style="diffusers")
    text_old = {"q_proj": "to_q", "k_proj": "to_k", "v_proj": "to_v", "out_proj": "to_out"}
    for _, name, hf in model.text_targets():
        attn, _, proj = hf.rpartition(".")
        if proj in text_old:
            add_lora(state, text_expected, f"text_encoder.{attn}.{text_old[proj]}_lora", name,
                     model.text_params[name].shape, g, style="processor", alpha=None)
    assert "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.down.weight" in state
    result = model.parse(state, tmp_path)
    assert result.unmatched == []
    assert any(n.endswith("attn2.to_out.0.weight") for n in result.unet)
    check_patched(model.unet, result.unet, unet_expected)
    check_patched(model.text, result.text, text_expected)


@pytest.mark.parametrize("model", ["sd1"], indirect=True)
def test_junk_and_incomplete_keys_are_reported_exactly(model, tmp_path):
    g = torch.Generator().manual_seed(4)
    state, expected = {}, {}
    good = "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    add_lora(state, expected, "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", good,
             model.unet_params[good].shape, g)
    junk = {
        "lora_unet_not_a_layer.lora_up.weight": torch.zeros(4, 2),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.dora_scale": torch.ones(32, 1),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(128, 2),  # SDXL prefix on sd1
        "lora_te_text_model_encoder_layers_99_mlp_fc1.alpha": torch.tensor(1.0),
        "lora_unet_input_blocks_1_1_proj_in.lora_up.weight": torch.zeros(32, 2, 1, 1),  # no down: incomplete
        "lora_unet_input_blocks_1_1_proj_in.alpha": torch.tensor(1.0),
        "lora_unet_input_blocks_1_1_norm.diff_b": torch.zeros(32),  # fine: the norm has a bias
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k.diff_b": torch.zeros(32),  # no bias there
        "some.random.key": torch.zeros(1),
    }
    state.update(junk)
    result = model.parse(state, tmp_path)
    reported = set(junk) - {"lora_unet_input_blocks_1_1_norm.diff_b"}
    assert sorted(result.unmatched) == sorted(reported)
    assert set(result.unet) == {good, "input_blocks.1.1.norm.bias"}
    assert any("proj_in" in p for p in result.problems)


@pytest.mark.parametrize("model", ["sd1"], indirect=True)
def test_conv_locon_with_and_without_tucker_mid(model, tmp_path):
    g = torch.Generator().manual_seed(5)
    state, expected = {}, {}
    conv = "input_blocks.4.0.in_layers.2.weight"  # [64, 32, 3, 3]
    add_lora(state, expected, "lora_unet_input_blocks_4_0_in_layers_2", conv, model.unet_params[conv].shape, g)
    tucker = "output_blocks.2.0.out_layers.3.weight"  # [64, 64, 3, 3]
    out_ch, in_ch, kh, kw = model.unet_params[tucker].shape
    up, mid, down = torch.randn(out_ch, RANK, 1, 1), torch.randn(RANK, RANK, kh, kw), torch.randn(RANK, in_ch, 1, 1)
    stem = "lora_unet_up_blocks_0_resnets_2_conv2"
    state.update({f"{stem}.lora_up.weight": up, f"{stem}.lora_mid.weight": mid, f"{stem}.lora_down.weight": down,
                  f"{stem}.alpha": torch.tensor(ALPHA)})
    # dW[o, i, h, w] = sum_ab up[o, a] mid[a, b, h, w] down[b, i], written out per kernel position
    dw = torch.zeros(out_ch, in_ch, kh, kw)
    for h in range(kh):
        for w in range(kw):
            dw[:, :, h, w] = up[:, :, 0, 0] @ mid[:, :, h, w] @ down[:, :, 0, 0]
    expected[tucker] = dw * ALPHA / RANK
    linear_on_1x1 = "input_blocks.1.1.proj_in.weight"  # a linear-shaped LoRA on SD1's 1x1 conv
    up, down = torch.randn(32, RANK), torch.randn(RANK, 32)
    state.update({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": up,
                  "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": down})
    expected[linear_on_1x1] = (up @ down).reshape(32, 32, 1, 1)
    result = model.parse(state, tmp_path)
    assert result.unmatched == []
    for name, patch in result.unet.items():
        assert patch.delta(model.unet_params[name].shape).shape == model.unet_params[name].shape
    check_patched(model.unet, result.unet, expected)


def hadamard_half(a, b, t=None):
    if t is None:
        return a @ b
    out = torch.zeros(a.shape[1], b.shape[1], *t.shape[2:])
    for h in range(t.shape[2]):
        for w in range(t.shape[3]):
            out[:, :, h, w] = a.T @ t[:, :, h, w] @ b
    return out


@pytest.mark.parametrize("model", ["sd2"], indirect=True)
def test_loha_linear_conv_and_tucker(model, tmp_path):
    g = torch.Generator().manual_seed(6)
    state, expected = {}, {}
    r = 3
    layers = {"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": False,
              "input_blocks.1.0.in_layers.2.weight": False, "input_blocks.1.0.out_layers.3.weight": True}
    for name, tucker in layers.items():
        shape = model.unet_params[name].shape
        stem = "lora_unet_" + name[:-len(".weight")].replace(".", "_")
        out_ch, in_flat = shape[0], int(torch.Size(shape[1:]).numel())
        if tucker:
            t = [torch.randn(r, r, *shape[2:], generator=g) for _ in range(2)]
            f = [torch.randn(r, out_ch, generator=g), torch.randn(r, shape[1], generator=g),
                 torch.randn(r, out_ch, generator=g), torch.randn(r, shape[1], generator=g)]
            state[f"{stem}.hada_t1"], state[f"{stem}.hada_t2"] = t
        else:
            t = [None, None]
            f = [torch.randn(out_ch, r, generator=g), torch.randn(r, in_flat, generator=g),
                 torch.randn(out_ch, r, generator=g), torch.randn(r, in_flat, generator=g)]
        for suffix, tensor in zip(("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), f):
            state[f"{stem}.{suffix}"] = tensor
        state[f"{stem}.alpha"] = torch.tensor(1.5)
        dw = hadamard_half(f[0], f[1], t[0]) * hadamard_half(f[2], f[3], t[1])
        expected[name] = dw.reshape(shape) * 1.5 / r
    text = "encoders.0.model.text_model.encoder.layers.0.mlp.fc2.weight"
    f = [torch.randn(64, r), torch.randn(r, 128), torch.randn(64, r), torch.randn(r, 128)]
    for suffix, tensor in zip(("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"), f):
        state[f"lora_te_text_model_encoder_layers_0_mlp_fc2.{suffix}"] = tensor
    result = model.parse(state, tmp_path)
    assert result.unmatched == [] and result.kinds() == {"loha": 4}
    check_patched(model.unet, result.unet, expected, atol=1e-4)
    check_patched(model.text, result.text, {text: (f[0] @ f[1]) * (f[2] @ f[3])}, atol=1e-4)


def kron(a, b):
    """Kronecker product written out: block (i, j) of the result is a[i, j] * b (trailing kernel dims kept)."""
    out = torch.zeros(a.shape[0] * b.shape[0], a.shape[1] * b.shape[1], *b.shape[2:])
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i * b.shape[0]:(i + 1) * b.shape[0], j * b.shape[1]:(j + 1) * b.shape[1]] = a[i, j] * b
    return out


@pytest.mark.parametrize("model", ["sdxl"], indirect=True)
def test_lokr_full_factored_and_conv(model, tmp_path):
    g = torch.Generator().manual_seed(7)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    state, expected = {}, {}
    full = "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"  # w1 [4, 8] (x) w2 [out / 4, in / 8]
    out_ch, in_ch = model.unet_params[full].shape
    w1, w2 = rnd(4, 8), rnd(out_ch // 4, in_ch // 8)
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    state.update({f"{stem}.lokr_w1": w1, f"{stem}.lokr_w2": w2, f"{stem}.alpha": torch.tensor(8.0)})
    expected[full] = kron(w1, w2)  # both whole: scale 1 whatever alpha says
    factored = "input_blocks.4.1.transformer_blocks.0.ff.net.2.weight"
    out_ch, in_ch = model.unet_params[factored].shape
    w1, w2a, w2b = rnd(4, 4), rnd(out_ch // 4, 2), rnd(2, in_ch // 4)
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_ff_net_2"
    state.update({f"{stem}.lokr_w1": w1, f"{stem}.lokr_w2_a": w2a, f"{stem}.lokr_w2_b": w2b,
                  f"{stem}.alpha": torch.tensor(1.0)})
    expected[factored] = kron(w1, w2a @ w2b) * 1.0 / 2
    both = "input_blocks.4.1.transformer_blocks.0.attn2.to_v.weight"
    out_ch, in_ch = model.unet_params[both].shape
    w1a, w1b, w2a, w2b = rnd(2, 3), rnd(3, 4), rnd(out_ch // 2, 3), rnd(3, in_ch // 4)
    stem = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_v"
    state.update({f"{stem}.lokr_w1_a": w1a, f"{stem}.lokr_w1_b": w1b, f"{stem}.lokr_w2_a": w2a,
                  f"{stem}.lokr_w2_b": w2b, f"{stem}.alpha": torch.tensor(6.0)})
    expected[both] = kron(w1a @ w1b, w2a @ w2b) * 6.0 / 3
    conv = "input_blocks.1.0.in_layers.2.weight"
    out_ch, in_ch, kh, kw = model.unet_params[conv].shape
    w1, w2a, w2b = rnd(4, 2), rnd(out_ch // 4, 2), rnd(2, in_ch // 2 * kh * kw)
    stem = "lora_unet_input_blocks_1_0_in_layers_2"
    state.update({f"{stem}.lokr_w1": w1, f"{stem}.lokr_w2_a": w2a, f"{stem}.lokr_w2_b": w2b,
                  f"{stem}.alpha": torch.tensor(2.0)})
    expected[conv] = kron(w1, (w2a @ w2b).reshape(out_ch // 4, in_ch // 2, kh, kw)) * 2.0 / 2
    tucker = "input_blocks.1.0.out_layers.3.weight"  # w1 [2, 4], w2 [out / 2, in / 4, 3, 3] from t2
    out_ch, in_ch, kh, kw = model.unet_params[tucker].shape
    w1, t2, w2a, w2b = rnd(2, 4), rnd(3, 3, kh, kw), rnd(3, out_ch // 2), rnd(3, in_ch // 4)
    stem = "lora_unet_input_blocks_1_0_out_layers_3"
    state.update({f"{stem}.lokr_w1": w1, f"{stem}.lokr_t2": t2, f"{stem}.lokr_w2_a": w2a, f"{stem}.lokr_w2_b": w2b,
                  f"{stem}.alpha": torch.tensor(1.0)})
    expected[tucker] = kron(w1, hadamard_half(w2a, w2b, t2)) * 1.0 / 3
    conv_full = "output_blocks.0.0.in_layers.2.weight"
    out_ch, in_ch, kh, kw = model.unet_params[conv_full].shape
    w1, w2 = rnd(2, 2), rnd(out_ch // 2, in_ch // 2, kh, kw)
    stem = "lora_unet_output_blocks_0_0_in_layers_2"
    state.update({f"{stem}.lokr_w1": w1, f"{stem}.lokr_w2": w2})
    expected[conv_full] = kron(w1, w2)
    result = model.parse(state, tmp_path)
    assert result.unmatched == [] and result.kinds() == {"lokr": len(expected)}
    check_patched(model.unet, result.unet, expected, atol=1e-4)


@pytest.mark.parametrize("model", ["sdxl"], indirect=True)
def test_full_diff_on_weights_biases_and_norms(model, tmp_path):
    state, expected = {}, {}
    for name in ("label_emb.0.0.weight", "out.2.weight", "middle_block.1.norm.weight", "time_embed.2.bias"):
        stem = "lora_unet_" + name.rsplit(".", 1)[0].replace(".", "_")
        diff = torch.randn(model.unet_params[name].shape)
        state[stem + (".diff_b" if name.endswith(".bias") else ".diff")] = diff
        expected[name] = diff
    text = "encoders.1.model.text_model.encoder.layers.1.self_attn.out_proj.weight"
    state["lora_te2_text_model_encoder_layers_1_self_attn_out_proj.diff"] = diff = torch.randn(64, 64)
    result = model.parse(state, tmp_path)
    assert result.unmatched == [] and result.kinds() == {"diff": 5}
    check_patched(model.unet, result.unet, expected)
    check_patched(model.text, result.text, {text: diff})


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl", "sdxl_refiner"])
def test_name_tables_are_unambiguous_and_match_diffusers(tiny_models, family):
    model = Model(tiny_models, family)
    names = diffusers_names(model.unet)
    per_level, up_attn = unet_layout(model.unet_params)
    for ldm, diffusers in names.items():
        assert ldm_unet_key_to_diffusers(ldm, per_level, up_attn) == diffusers
        assert diffusers_unet_key_to_ldm(diffusers, per_level, up_attn) == ldm
    spellings = [s for a in (unet_aliases(model.unet_params), text_aliases(model.text.state_dict(), family))
                 for ss in a.values() for s in ss]
    assert len(spellings) == len(set(spellings))
    assert not any("pooled_encoder" in m for m in text_aliases(model.text.state_dict(), family))


def test_refiner_accepts_bigg_under_either_text_prefix(tiny_models):
    model = Model(tiny_models, "sdxl_refiner")
    state = {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.randn(128, 2),
             "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.randn(2, 64),
             "text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_A.weight": torch.randn(2, 64),
             "text_encoder.text_model.encoder.layers.1.mlp.fc1.lora_B.weight": torch.randn(128, 2)}
    result = parse_lora(state, model.unet_params, model.text_params, "sdxl_refiner")
    assert result.unmatched == [] and len(result.text) == 2
    with pytest.raises(ValueError, match="family"):
        parse_lora(state, model.unet_params, model.text_params, "sd9")
