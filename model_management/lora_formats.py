"""Reading LoRA-style files (kohya, diffusers/PEFT, LyCORIS) into patches keyed by OUR parameter names.

Files name the layer they change in one of several layouts: kohya flattens a module path with `_`
(`lora_unet_down_blocks_0_attentions_0_proj_in`, or LDM-style `lora_unet_input_blocks_4_1_proj_in` in SDXL files),
diffusers/PEFT keep dotted diffusers paths under `unet.` / `text_encoder.` / `text_encoder_2.`. Flattened names
cannot be split back (`to_q`, `proj_in` and `transformer_blocks` contain underscores), so nothing is parsed: every
name our model has is spelled in each layout it can appear in, and file keys are looked up in that table. A key
that matches nothing -- or belongs to an incomplete or duplicated set -- is listed in `LoraSet.unmatched`, never
dropped silently.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from model_management.diffusers_folder import ldm_unet_key_to_diffusers, unet_layout
from model_management.weight_patches import (DiffPatch, LohaPatch, LokrPatch, LoraPatch, Patch, PatchSpec,
                                             SlicedPatch)

UNET, TEXT = "unet", "text"

# Component suffixes, longest first where one ends another. (file suffix, component)
_SUFFIXES: Tuple[Tuple[str, str], ...] = (
    (".lora_up.weight", "up"), (".lora_down.weight", "down"), (".lora_mid.weight", "mid"),
    (".lora_B.weight", "up"), (".lora_A.weight", "down"),
    (".lora_linear_layer.up.weight", "up"), (".lora_linear_layer.down.weight", "down"),
    (".lora_layer.up.weight", "up"), (".lora_layer.down.weight", "down"),
    (".lora.up.weight", "up"), (".lora.down.weight", "down"),
    (".up.weight", "up"), (".down.weight", "down"),  # XLabs' Flux LoRAs (`processor.qkv_lora1.up.weight`)
    (".hada_w1_a", "hada_w1_a"), (".hada_w1_b", "hada_w1_b"), (".hada_w2_a", "hada_w2_a"),
    (".hada_w2_b", "hada_w2_b"), (".hada_t1", "hada_t1"), (".hada_t2", "hada_t2"),
    (".lokr_w1_a", "lokr_w1_a"), (".lokr_w1_b", "lokr_w1_b"), (".lokr_w1", "lokr_w1"),
    (".lokr_w2_a", "lokr_w2_a"), (".lokr_w2_b", "lokr_w2_b"), (".lokr_w2", "lokr_w2"), (".lokr_t2", "lokr_t2"),
    (".diff_b", "diff_b"), (".diff", "diff"), (".alpha", "alpha"),
)
# Old diffusers attention processors: `attn1.processor.to_q_lora.down.weight` is a LoRA on `attn1.to_q`
# (UNet) and `self_attn.to_q_lora.down.weight` one on `self_attn.q_proj` (CLIP).
_PROCESSOR = re.compile(r"^(.*?)\.(?:processor\.)?(to_q|to_k|to_v|to_out)_lora\.(up|down)\.weight$")
_UNET_PROCESSOR = {"to_q": "to_q", "to_k": "to_k", "to_v": "to_v", "to_out": "to_out.0"}
_TEXT_PROCESSOR = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}
_PEFT_PREFIX = "base_model.model."

# Per family, per text encoder index: kohya prefixes and diffusers/PEFT prefixes naming that encoder. The SDXL
# refiner's only encoder is bigG, which SDXL files call te2 / text_encoder_2.
_TEXT_PREFIXES: Dict[str, Tuple[Tuple[Tuple[str, ...], Tuple[str, ...]], ...]] = {
    "sd1": ((("lora_te_",), ("text_encoder.",)),),
    "sd2": ((("lora_te_",), ("text_encoder.",)),),
    "sdxl": ((("lora_te1_",), ("text_encoder.",)), (("lora_te2_",), ("text_encoder_2.",))),
    "sdxl_refiner": ((("lora_te_", "lora_te2_"), ("text_encoder.", "text_encoder_2.")),),
}
_TEXT_PARAM = re.compile(r"^encoders\.(\d+)\.model\.(.*)$")


@dataclass
class LoraSet:
    """Patches read from one file: by UNet parameter name, by text-stack parameter name, and the file keys that
    were not used (with why, in `problems`)."""
    unet: Dict[str, Patch] = field(default_factory=dict)
    text: Dict[str, Patch] = field(default_factory=dict)
    unmatched: List[str] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)

    def kinds(self) -> Dict[str, int]:
        """How many patches of each kind (lora, loha, lokr, diff) -- for logs and the UI."""
        return dict(Counter(p.kind for p in list(self.unet.values()) + list(self.text.values())))

    def unet_patches(self, strength: float) -> List[PatchSpec]:
        return [(name, patch, strength) for name, patch in self.unet.items()]

    def text_patches(self, strength: float) -> List[PatchSpec]:
        return [(name, patch, strength) for name, patch in self.text.items()]

    def __len__(self) -> int:
        return len(self.unet) + len(self.text)


def _flat(name: str) -> str:
    return name.replace(".", "_")


class _Table:
    """File-side module names -> (target, our module name); names two modules would share are dropped."""

    def __init__(self) -> None:
        self.names: Dict[str, Tuple[str, str]] = {}
        self.ambiguous: set = set()

    def add(self, alias: str, target: str, module: str) -> None:
        if alias in self.ambiguous:
            return
        known = self.names.get(alias)
        if known is not None and known != (target, module):
            del self.names[alias]
            self.ambiguous.add(alias)
        else:
            self.names[alias] = (target, module)


def _modules(param_names: Iterable[str]) -> Tuple[List[str], set]:
    """Module names that have a `.weight` (what a LoRA can change) and the set of all parameter names."""
    names = set(param_names)
    return sorted({n[:-len(".weight")] for n in names if n.endswith(".weight")}), names


def dit_aliases(modules: List[str], diffusers_names: Dict[str, tuple]) -> Dict[str, List[str]]:
    """Every file-side spelling of each diffusion-transformer (SD3, Flux) module: the original names (kohya
    `lora_unet_joint_blocks_*` / `lora_unet_double_blocks_*`, dotted under `diffusion_model.` or `transformer.`)
    and diffusers' (`transformer.transformer_blocks.N.attn.to_q`, PEFT and kohya-flattened), from the family's
    `diffusers_module_names` table. A diffusers layer that is one block of our fused layer (q, k or v of a qkv;
    Flux's MLP input of linear1) is spelled `module#part#shares`."""
    out: Dict[str, List[str]] = {m: ["lora_unet_" + _flat(m), "diffusion_model." + m, "model.diffusion_model." + m,
                                     "transformer." + m] for m in modules}
    known = set(modules)
    for diffusers, (module, part, shares) in diffusers_names.items():
        if module not in known:
            continue
        name = module if part is None else f"{module}#{part}#{','.join(map(str, shares))}"
        out.setdefault(name, []).extend(["transformer." + diffusers, diffusers, "lora_transformer_" + _flat(diffusers)])
    return out


def _blocks(modules: List[str], prefix: str) -> int:
    return 1 + max((int(m.split(".")[1]) for m in modules if m.startswith(prefix)), default=-1)


def mmdit_aliases(modules: List[str]) -> Dict[str, List[str]]:
    from diffusion.mmdit.diffusers_keys import diffusers_module_names
    return dit_aliases(modules, diffusers_module_names(_blocks(modules, "joint_blocks.")))


def flux_aliases(modules: List[str]) -> Dict[str, List[str]]:
    """dit_aliases for Flux (its MLP is 4x its width: linear1's rows are q, k, v, then 4 widths of MLP input), plus
    XLabs' names of the double blocks' attention: `double_blocks.N.processor.qkv_lora1` (image stream), `..2`
    (text stream), `proj_lora1/2`."""
    from diffusion.flux.diffusers_keys import diffusers_module_names
    double = _blocks(modules, "double_blocks.")
    out = dit_aliases(modules, diffusers_module_names(double, _blocks(modules, "single_blocks."), 4))
    for i in range(double):
        for stream, side in (("1", "img"), ("2", "txt")):
            for layer in ("qkv", "proj"):
                module = f"double_blocks.{i}.{side}_attn.{layer}"
                if module in out:
                    out[module].append(f"double_blocks.{i}.processor.{layer}_lora{stream}")
    return out


def unet_aliases(unet_param_names: Iterable[str]) -> Dict[str, List[str]]:
    """Every file-side spelling of each UNet module (kohya LDM / kohya diffusers / dotted diffusers / dotted LDM)."""
    modules, names = _modules(unet_param_names)
    if any(m.startswith("joint_blocks.") for m in modules):
        return mmdit_aliases(modules)
    if any(m.startswith("double_blocks.") for m in modules):
        return flux_aliases(modules)
    per_level, up_attn = unet_layout(names)
    out: Dict[str, List[str]] = {}
    for module in modules:
        spellings = ["lora_unet_" + _flat(module), "diffusion_model." + module, "model.diffusion_model." + module]
        diffusers = ldm_unet_key_to_diffusers(module + ".weight", per_level, up_attn)
        if diffusers is not None:
            d = diffusers[:-len(".weight")]
            spellings += ["lora_unet_" + _flat(d), "unet." + d, d]
        out[module] = spellings
    return out


def _hf_text_name(rest: str) -> str:
    """Our encoder-relative name as transformers spells it (CLIPTextModel(WithProjection), T5EncoderModel)."""
    if rest.startswith(("encoder.block.", "encoder.final_layer_norm.", "shared.")):  # T5
        return rest
    return rest if rest.split(".")[0] in ("text_model", "text_projection") else "text_model." + rest


# SD3's encoders by role (a stack holds any of them, so indices do not say which): kohya te1/te2/te3, diffusers
# text_encoder / _2 / _3
_ROLE_TEXT_PREFIXES = {
    "sd3": {"clip_l": (("lora_te1_",), ("text_encoder.",)), "clip_g": (("lora_te2_",), ("text_encoder_2.",)),
            "t5xxl": (("lora_te3_",), ("text_encoder_3.",))},
    # Flux: kohya's te1 (CLIP-L) / te3 (T5), diffusers' text_encoder (CLIP-L) / text_encoder_2 (T5)
    "flux": {"clip_l": (("lora_te1_", "lora_te_"), ("text_encoder.",)), "t5xxl": (("lora_te3_",), ("text_encoder_2.",))},
}


def _sd3_roles(modules: List[str]) -> Dict[int, str]:
    """Encoder index -> role for an SD3 or Flux stack's parameter names: T5 by its blocks; of two CLIPs the first is
    CLIP-L (the stack's order); a lone CLIP is bigG when it is 32 layers deep."""
    layers: Dict[int, int] = {}
    t5 = set()
    for module in modules:
        m = _TEXT_PARAM.match(module)
        if not m:
            continue
        index, rest = int(m.group(1)), m.group(2)
        if rest.startswith(("encoder.block.", "shared")):
            t5.add(index)
        layer = re.search(r"encoder\.layers\.(\d+)\.", rest)
        layers[index] = max(layers.get(index, 0), int(layer.group(1)) + 1 if layer else 0)
    clips = sorted(i for i in layers if i not in t5)
    roles = {i: "t5xxl" for i in t5}
    if len(clips) == 2:
        roles.update({clips[0]: "clip_l", clips[1]: "clip_g"})
    elif clips:
        roles[clips[0]] = "clip_g" if layers[clips[0]] >= 32 else "clip_l"
    return roles


def text_aliases(text_param_names: Iterable[str], family: str) -> Dict[str, List[str]]:
    """Every file-side spelling of each text-encoder module (kohya lora_te*/, diffusers text_encoder*/)."""
    if family not in _TEXT_PREFIXES and family not in _ROLE_TEXT_PREFIXES:
        raise ValueError(f"unknown model family {family!r} (expected one of "
                         f"{', '.join(list(_TEXT_PREFIXES) + list(_ROLE_TEXT_PREFIXES))})")
    modules, _ = _modules(n for n in text_param_names if not n.startswith("pooled_encoder."))
    if family in _ROLE_TEXT_PREFIXES:
        table = _ROLE_TEXT_PREFIXES[family]
        prefixes = {i: table[role] for i, role in _sd3_roles(modules).items() if role in table}
    else:
        prefixes = dict(enumerate(_TEXT_PREFIXES[family]))
    out: Dict[str, List[str]] = {}
    for module in modules:
        m = _TEXT_PARAM.match(module)
        if not m or int(m.group(1)) not in prefixes:
            continue
        kohya, dotted = prefixes[int(m.group(1))]
        hf = _hf_text_name(m.group(2))
        out[module] = [k + _flat(hf) for k in kohya] + [d + hf for d in dotted]
    return out


def _split(key: str) -> Optional[Tuple[str, str]]:
    """(file-side module name, component) of one file key; None when the suffix is not a known one."""
    if key.startswith(_PEFT_PREFIX):
        key = key[len(_PEFT_PREFIX):]
    m = _PROCESSOR.match(key)
    if m:
        parent, proj, part = m.groups()
        table = _TEXT_PROCESSOR if parent.endswith("self_attn") else _UNET_PROCESSOR
        return f"{parent}.{table[proj]}", part
    for suffix, component in _SUFFIXES:
        if key.endswith(suffix):
            return key[:-len(suffix)], component
    return None


def _alpha(value: Optional[torch.Tensor]) -> Optional[float]:
    return None if value is None else float(value.float().reshape(-1)[0])


def _kind(component: str) -> Optional[str]:
    if component in ("up", "down", "mid"):
        return "lora"
    if component.startswith(("hada_", "lokr_")):
        return "loha" if component.startswith("hada_") else "lokr"
    return "diff" if component == "diff" else None  # alpha and diff_b go with any kind


def _build(parts: Dict[str, torch.Tensor]) -> Dict[str, Patch]:
    """Patches ("weight"/"bias" -> patch) from one module's components; raises ValueError for incomplete sets."""
    has = lambda *names: all(n in parts for n in names)  # noqa: E731
    alpha = _alpha(parts.get("alpha"))
    out: Dict[str, Patch] = {}
    if "diff_b" in parts:
        out["bias"] = DiffPatch(parts["diff_b"])
    kinds = sorted({_kind(c) for c in parts} - {None})
    if len(kinds) > 1:
        raise ValueError(f"mixes {' and '.join(kinds)} components")
    kind = kinds[0] if kinds else None
    if kind == "lora":
        if not has("up", "down"):
            raise ValueError("has only one of the up/down LoRA factors")
        out["weight"] = LoraPatch(parts["up"], parts["down"], alpha, parts.get("mid"))
    elif kind == "loha":
        if not has("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b") or ("hada_t1" in parts) != ("hada_t2" in parts):
            raise ValueError("has an incomplete LoHa set (needs hada_w1_a/b, hada_w2_a/b, and t1 with t2)")
        out["weight"] = LohaPatch(parts["hada_w1_a"], parts["hada_w1_b"], parts["hada_w2_a"], parts["hada_w2_b"],
                                  alpha, parts.get("hada_t1"), parts.get("hada_t2"))
    elif kind == "lokr":
        w1 = has("lokr_w1") or has("lokr_w1_a", "lokr_w1_b")
        w2 = has("lokr_w2") or has("lokr_w2_a", "lokr_w2_b")
        if not (w1 and w2) or ("lokr_t2" in parts and not has("lokr_w2_a", "lokr_w2_b")):
            raise ValueError("has an incomplete LoKr set (needs lokr_w1 or lokr_w1_a/b, and lokr_w2 or lokr_w2_a/b)")
        get = parts.get
        out["weight"] = LokrPatch(get("lokr_w1"), get("lokr_w1_a"), get("lokr_w1_b"), get("lokr_w2"),
                                  get("lokr_w2_a"), get("lokr_w2_b"), get("lokr_t2"), alpha)
    elif kind == "diff":
        out["weight"] = DiffPatch(parts["diff"])
    if not out:
        raise ValueError("has no patch factors (only " + ", ".join(sorted(parts)) + ")")
    return out


def parse_lora(state_dict: Dict[str, torch.Tensor], unet_param_names: Iterable[str],
               text_param_names: Iterable[str], family: str) -> LoraSet:
    """Patches keyed by our parameter names from a LoRA-style state dict, for a model of `family` ("sd1", "sd2",
    "sdxl", "sdxl_refiner", "sd3") whose UNet and text stack have the given parameter names."""
    unet_names, text_names = set(unet_param_names), set(text_param_names)
    table = _Table()
    for target, aliases in ((UNET, unet_aliases(unet_names)), (TEXT, text_aliases(text_names, family))):
        for module, spellings in aliases.items():
            for spelling in spellings:
                table.add(spelling, target, module)
    result = LoraSet()
    groups: Dict[Tuple[str, str], Dict[str, torch.Tensor]] = {}
    group_keys: Dict[Tuple[str, str], List[str]] = {}
    for key, value in state_dict.items():
        split = _split(key)
        found = table.names.get(split[0]) if split else None
        if found is None:
            result.unmatched.append(key)
            continue
        parts = groups.setdefault(found, {})
        if split[1] in parts:  # the same module named twice (two layouts in one file)
            result.unmatched.append(key)
            result.problems.append(f"{key}: a second {split[1]} for {found[1]}")
            continue
        parts[split[1]] = value
        group_keys.setdefault(found, []).append(key)
    for (target, module), parts in groups.items():
        keys = group_keys[(target, module)]
        try:
            built = _build(parts)
        except ValueError as exc:
            result.unmatched.extend(keys)
            result.problems.append(f"{module}: {exc}")
            continue
        names = unet_names if target == UNET else text_names
        into = result.unet if target == UNET else result.text
        module, _, part = module.partition("#")
        part, _, shares = part.partition("#")
        for slot, patch in built.items():
            name = f"{module}.{slot}"
            if part and slot == "weight":  # a block of a fused weight (diffusers' to_q / to_k / to_v, Flux's MLP)
                sliced = into.get(name)
                if not isinstance(sliced, SlicedPatch):
                    sliced = SlicedPatch({}, tuple(int(n) for n in shares.split(","))) if shares else SlicedPatch({})
                sliced.parts[int(part)] = patch
                patch = sliced
            elif part:
                result.unmatched.extend(k for k in keys if k.endswith(".diff_b"))
                result.problems.append(f"{module}: a bias patch on one block of a fused layer")
                continue
            if name not in names:
                result.unmatched.extend(k for k in keys if k.endswith(".diff_b") == (slot == "bias"))
                result.problems.append(f"{module}: the model has no {name}")
                continue
            into[name] = patch
    return result


def read_lora(path: str, unet_param_names: Iterable[str], text_param_names: Iterable[str], family: str) -> LoraSet:
    """`parse_lora` on a weight file (safetensors by memory map; pickles only through the safe loader)."""
    from model_management.file_loading import load_state_dict
    return parse_lora(load_state_dict(path), unet_param_names, text_param_names, family)
