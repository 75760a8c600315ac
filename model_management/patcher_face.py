"""ComfyUI's ModelPatcher interface on our MODEL, so node packs can patch a model the way they do on ComfyUI.

`DiffusionModel` (model_objects.py) inherits `ModelPatcherFace`. The face keeps ComfyUI's state where packs look for
it and the engine honours all of it when it samples (docs/architecture.md §9):
  - `model_options`: `transformer_options` (attention/block patches and replacements, read by the UNet: see
    diffusion/unet/attention.py and model.py; `wrappers` and `callbacks` by kind), `sampler_cfg_function`,
    `sampler_pre_cfg_function` / `sampler_post_cfg_function` lists, `model_function_wrapper`,
    `denoise_mask_function`, `disable_cfg1_optimization` (read by diffusion/sampling/guidance.py and ksampler.py);
  - `object_patches`: attributes replaced while the model runs (`diffusion_model.input_blocks.1.forward`,
    `model_sampling`, ...), put back afterwards;
  - weight patches in ComfyUI's forms (`add_patches`), converted to our patch objects (weight_patches.py) and
    applied like LoRAs: in place while sampling, restored bit-exactly.
`model.model` is a `BaseModelView`: the parts of ComfyUI's BaseModel packs read (`diffusion_model`, `latent_format`,
`model_sampling`, `apply_model`, ...). Clones copy the option dicts and lists (not the callables in them), so a
pack's change to a clone never reaches the model it was cloned from.
"""
from __future__ import annotations

import contextlib
import enum
from typing import Any, Callable, Dict, Iterable, List, Optional

import torch

from model_management.device_face import DeviceFace
from model_management.latent_formats import for_family
from model_management.patcher_extension import check_callback_type, check_wrapper_type
from model_management.weight_patches import DiffPatch, LohaPatch, LokrPatch, LoraPatch, MergePatch, ScalePatch

UNET_PREFIX = "diffusion_model."  # ComfyUI names UNet weights with this prefix on the BaseModel


class ModelType(enum.Enum):
    """ComfyUI's comfy.model_base.ModelType values for the prediction types we sample."""
    EPS = 1
    V_PREDICTION = 2


def copy_options(value: Any) -> Any:
    """Dicts and lists copied recursively; everything else (callables, tensors, modules) shared."""
    if isinstance(value, dict):
        return {k: copy_options(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_options(v) for v in value]
    return value


def record_comfy_patches(target: list, resolved: Iterable[tuple], strength_patch: float,
                         strength_model: float) -> List[str]:
    """(ComfyUI key, our parameter name, ComfyUI patch value) triples -> (name, patch, strength) entries appended
    to `target` (a MODEL's or CLIP's patch list); returns the keys used. `strength_model` != 1 also scales the
    weight itself."""
    used = []
    for key, name, value in resolved:
        patch = from_comfy_patch(name, value)
        if patch is None:
            raise ValueError(f"add_patches: cannot read the patch for {key} ({type(value).__name__})")
        if strength_model != 1.0:
            target.append((name, ScalePatch(), float(strength_model) - 1.0))
        target.append((name, patch, float(strength_patch)))
        used.append(key)
    return used


def key_patches(entries: list, weights: Iterable[tuple], filter_prefix: Optional[str] = None) -> Dict[str, Any]:
    """ComfyUI's get_key_patches form from (ComfyUI key, our name, tensor) triples and a patch list."""
    by_name: Dict[str, list] = {}
    for name, patch, strength in entries:
        by_name.setdefault(name, []).append((strength, patch, 1.0, None, None))
    out: Dict[str, Any] = {}
    for key, name, tensor in weights:
        if filter_prefix is not None and not key.startswith(filter_prefix):
            continue
        own = by_name.get(name)
        out[key] = [(tensor.detach(),)] + own if own else (tensor.detach(),)
    return out


class _TensorSource:
    """What MergePatch reads its other weight from: one fixed tensor, or a base tensor with patches applied."""

    def __init__(self, tensor: torch.Tensor, patches: Iterable = ()) -> None:
        self.tensor, self.patches = tensor, list(patches)

    def weight(self, name: str) -> torch.Tensor:
        if not self.patches:
            return self.tensor
        from model_management.weight_patches import patched_weight
        return patched_weight(self.tensor, self.patches, name)


def from_comfy_patch(name: str, value: Any) -> Any:
    """One ComfyUI patch value for parameter `name` -> our patch object, or None for a form we cannot read.

    Forms: our own patch objects (what comfy.lora.load_lora returns); `(tensor,)` a tensor added at the patch
    strength (model merges pass another model's whole weight); `[(tensor,), *patches]` the same with that model's own
    patches applied to it first; `("diff", (tensor,))`;
    `("lora", (up, down, alpha, mid, ...))`; `("loha", (w1a, w1b, alpha, w2a, w2b, t1, t2, ...))`;
    `("lokr", (w1, w2, alpha, w1a, w1b, w2a, w2b, t2, ...))`."""
    if isinstance(value, (LoraPatch, LohaPatch, LokrPatch, DiffPatch, MergePatch, ScalePatch)):
        return value
    if isinstance(value, list) and value and isinstance(value[0], tuple) and torch.is_tensor(value[0][0]):
        inner = [(p, s) for s, p in (_inner(name, item) for item in value[1:]) if p is not None]
        return MergePatch(_TensorSource(value[0][0], inner), name, weight_factor=0.0, other_factor=1.0)
    if isinstance(value, tuple) and len(value) == 1 and torch.is_tensor(value[0]):
        return DiffPatch(value[0])  # ComfyUI adds a lone tensor at the patch strength
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        kind, args = value
        args = tuple(args) + (None,) * 8
        if kind == "diff":
            return DiffPatch(args[0])
        if kind == "lora":
            return LoraPatch(up=args[0], down=args[1], alpha=_scalar(args[2]), mid=args[3])
        if kind == "loha":
            return LohaPatch(w1a=args[0], w1b=args[1], alpha=_scalar(args[2]), w2a=args[3], w2b=args[4],
                             t1=args[5], t2=args[6])
        if kind == "lokr":
            return LokrPatch(w1=args[0], w2=args[1], alpha=_scalar(args[2]), w1a=args[3], w1b=args[4],
                             w2a=args[5], w2b=args[6], t2=args[7])
    return None


def _inner(name: str, item: Any) -> tuple:
    """(strength, patch) of a `(strength, value, strength_model, offset, function)` entry of get_key_patches."""
    if isinstance(item, tuple) and len(item) >= 2 and isinstance(item[0], (int, float)):
        return float(item[0]), from_comfy_patch(name, item[1])
    return 0.0, None


def _scalar(value: Any) -> Optional[float]:
    if value is None:
        return None
    return float(value.item() if torch.is_tensor(value) else value)


class ModelPatcherFace(DeviceFace):
    """ComfyUI's ModelPatcher methods over a DiffusionModel (which provides `clone`, `patches`, `unet`, `family`,
    `options`, `device`, `dtype`, `model_sampling`, `forward`)."""

    # -- sampling hooks -------------------------------------------------------------------------------------------
    def set_model_sampler_cfg_function(self, fn: Callable, disable_cfg1_optimization: bool = False) -> None:
        """fn(args) -> the guided noise prediction; args as ComfyUI passes them (cond, uncond, cond_scale, ...)."""
        self.model_options["sampler_cfg_function"] = fn
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_post_cfg_function(self, fn: Callable, disable_cfg1_optimization: bool = False) -> None:
        self.model_options.setdefault("sampler_post_cfg_function", []).append(fn)
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_sampler_pre_cfg_function(self, fn: Callable, disable_cfg1_optimization: bool = False) -> None:
        self.model_options.setdefault("sampler_pre_cfg_function", []).append(fn)
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, fn: Callable) -> None:
        """fn(apply_model, {"input", "timestep", "c", "cond_or_uncond"}) -> denoised, around every model call."""
        self.model_options["model_function_wrapper"] = fn

    def set_model_denoise_mask_function(self, fn: Callable) -> None:
        """fn(sigma, denoise_mask, extra_options={"model", "sigmas"}) -> the mask used at this step (inpainting)."""
        self.model_options["denoise_mask_function"] = fn

    # -- transformer_options patches ------------------------------------------------------------------------------
    def _transformer_options(self) -> dict:
        return self.model_options.setdefault("transformer_options", {})

    def set_model_patch(self, patch: Any, name: str) -> None:
        self._transformer_options().setdefault("patches", {}).setdefault(name, []).append(patch)

    def set_model_patch_replace(self, patch: Callable, name: str, block_name: str, number: int,
                                transformer_index: Optional[int] = None) -> None:
        key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
        self._transformer_options().setdefault("patches_replace", {}).setdefault(name, {})[key] = patch

    def set_model_attn1_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn1_patch")

    def set_model_attn2_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn2_patch")

    def set_model_attn1_replace(self, patch: Callable, block_name: str, number: int,
                                transformer_index: Optional[int] = None) -> None:
        self.set_model_patch_replace(patch, "attn1", block_name, number, transformer_index)

    def set_model_attn2_replace(self, patch: Callable, block_name: str, number: int,
                                transformer_index: Optional[int] = None) -> None:
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)

    def set_model_attn1_output_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn1_output_patch")

    def set_model_attn2_output_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "attn2_output_patch")

    def set_model_input_block_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "input_block_patch")

    def set_model_input_block_patch_after_skip(self, patch: Callable) -> None:
        self.set_model_patch(patch, "input_block_patch_after_skip")

    def set_model_output_block_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "output_block_patch")

    def set_model_emb_patch(self, patch: Callable) -> None:
        self.set_model_patch(patch, "emb_patch")

    def set_model_forward_timestep_embed_patch(self, patch: tuple) -> None:
        self.set_model_patch(patch, "forward_timestep_embed_patch")

    # -- wrappers and callbacks (patcher_extension) ---------------------------------------------------------------
    def _keyed(self, table: str, kind: str) -> dict:
        """key -> list of callables, for one kind of `wrappers` or `callbacks` in transformer_options."""
        return self._transformer_options().setdefault(table, {}).setdefault(kind, {})

    def _all_keyed(self, table: str, kind: str, key: Optional[str]) -> list:
        by_key = self._transformer_options().get(table, {}).get(kind, {})
        return list(by_key.get(key, [])) if key is not None else [f for fs in by_key.values() for f in fs]

    def add_wrapper_with_key(self, wrapper_type: str, key: str, wrapper: Callable) -> None:
        check_wrapper_type(wrapper_type)
        self._keyed("wrappers", wrapper_type).setdefault(key, []).append(wrapper)

    def add_wrapper(self, wrapper_type: str, wrapper: Callable) -> None:
        self.add_wrapper_with_key(wrapper_type, None, wrapper)

    def get_wrappers(self, wrapper_type: str, key: Optional[str] = None) -> list:
        return self._all_keyed("wrappers", wrapper_type, key)

    def remove_wrappers_with_key(self, wrapper_type: str, key: str) -> None:
        self._keyed("wrappers", wrapper_type).pop(key, None)

    def add_callback_with_key(self, call_type: str, key: str, callback: Callable) -> None:
        check_callback_type(call_type)
        self._keyed("callbacks", call_type).setdefault(key, []).append(callback)

    def add_callback(self, call_type: str, callback: Callable) -> None:
        self.add_callback_with_key(call_type, None, callback)

    def get_callbacks(self, call_type: str, key: Optional[str] = None) -> list:
        return self._all_keyed("callbacks", call_type, key)

    def remove_callbacks_with_key(self, call_type: str, key: str) -> None:
        self._keyed("callbacks", call_type).pop(key, None)

    def set_attachments(self, key: str, attachment: Any) -> None:
        self.attachments[key] = attachment

    def get_attachment(self, key: str) -> Any:
        return self.attachments.get(key)

    def remove_attachments(self, key: str) -> None:
        self.attachments.pop(key, None)

    def set_additional_models(self, key: str, models: list) -> None:
        self.additional_models[key] = list(models)

    def get_additional_models(self) -> list:
        return [m for ms in self.additional_models.values() for m in ms]

    def get_additional_models_with_key(self, key: str) -> list:
        return list(self.additional_models.get(key, []))

    # -- object patches ----------------------------------------------------------------------------------------------
    def add_object_patch(self, name: str, obj: Any) -> None:
        """Replace the attribute at dotted path `name` of the BaseModel (e.g. `diffusion_model.out.forward`) while
        this clone runs; `model_sampling` replaces the sampling schedule."""
        self.object_patches[name] = obj

    def get_model_object(self, name: str) -> Any:
        """The object at `name`: this clone's object patch, else the BaseModel's attribute (e.g.
        `diffusion_model`, `model_sampling`, `latent_format`)."""
        if name in self.object_patches:
            return self.object_patches[name]
        target: Any = self.model
        for part in name.split("."):
            target = target[int(part)] if part.isdigit() and isinstance(target, torch.nn.ModuleList) else \
                getattr(target, part)
        return target

    @contextlib.contextmanager
    def object_patches_applied(self, unet: torch.nn.Module):
        """Set this clone's `diffusion_model.*` object patches on the live UNet; put the originals back after."""
        saved = []
        try:
            for name, obj in self.object_patches.items():
                if not name.startswith(UNET_PREFIX):
                    continue  # model_sampling and other BaseModel-level names are read where they are used
                owner, attr = _owner(unet, name[len(UNET_PREFIX):])
                had = attr in owner.__dict__
                saved.append((owner, attr, had, owner.__dict__.get(attr)))
                setattr(owner, attr, obj)
            yield unet
        finally:
            for owner, attr, had, old in reversed(saved):
                if had:
                    setattr(owner, attr, old)
                else:
                    delattr(owner, attr)

    # -- weights ----------------------------------------------------------------------------------------------------
    def add_patches(self, patches: Dict[str, Any], strength_patch: float = 1.0,
                    strength_model: float = 1.0) -> List[str]:
        """Record weight patches keyed by ComfyUI parameter names (`diffusion_model.*`); returns the keys used.

        `strength_model` scales the weight itself (w * strength_model + strength_patch * delta), as model merges
        use it."""
        params = dict(self.unet.named_parameters())
        resolved = []
        for key, value in patches.items():
            name = key[len(UNET_PREFIX):] if key.startswith(UNET_PREFIX) else key
            if name in params:
                resolved.append((key, name, value))
        return record_comfy_patches(self.patches, resolved, strength_patch, strength_model)

    def get_key_patches(self, filter_prefix: Optional[str] = None) -> Dict[str, Any]:
        """ComfyUI names -> `(weight,)`, or `[(weight,), (strength, patch, 1.0, None, None), ...]` when this clone
        patches that weight."""
        weights = ((UNET_PREFIX + name, name, tensor) for name, tensor in self.unet.state_dict(keep_vars=True).items())
        return key_patches(self.patches, weights, filter_prefix)

    def model_state_dict(self, filter_prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
        """The UNet's weights under ComfyUI names (unpatched, as ComfyUI's)."""
        return {UNET_PREFIX + k: v for k, v in self.unet.state_dict().items()
                if filter_prefix is None or (UNET_PREFIX + k).startswith(filter_prefix)}

    def patch_model(self, device_to: Any = None, *args: Any, **kwargs: Any) -> torch.nn.Module:
        """Apply this clone's weight patches to the UNet in place until `unpatch_model` (ComfyUI's explicit form of
        what sampling does on its own)."""
        if getattr(self, "_explicit_patch", None) is None:
            stack = contextlib.ExitStack()
            self._explicit_patch = stack
            return stack.enter_context(self.patched())
        return self.unet

    def unpatch_model(self, device_to: Any = None, unpatch_weights: bool = True) -> None:
        stack = getattr(self, "_explicit_patch", None)
        if stack is not None:
            self._explicit_patch = None
            stack.close()

    # -- identity, devices, sizes -------------------------------------------------------------------------------------
    def is_clone(self, other: Any) -> bool:
        return getattr(other, "_unet", None) is self._unet

    def clone_has_same_weights(self, other: Any) -> bool:
        return self.is_clone(other) and [(n, id(p), s) for n, p, s in self.patches] == \
            [(n, id(p), s) for n, p, s in getattr(other, "patches", [])]

    def model_dtype(self) -> torch.dtype:
        return self.dtype

    @property
    def current_device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def current_loaded_device(self) -> torch.device:
        return self.current_device

    def model_size(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.unet.state_dict().values())

    @property
    def size(self) -> int:
        return self.model_size()

    def loaded_size(self) -> int:
        return self.model_size() if self.current_device == self.device else 0

    def memory_required(self, input_shape: Any) -> int:
        return self.model.memory_required(input_shape)

    @property
    def model(self) -> "BaseModelView":
        """The BaseModel view, of the class ComfyUI uses for this family (packs tell SDXL apart by isinstance)."""
        view = {"sdxl": SDXLModelView, "sdxl_refiner": SDXLRefinerModelView}.get(self.family.name, BaseModelView)
        return view(self)


def _owner(root: Any, dotted: str) -> tuple:
    """(object holding the last attribute, attribute name) for a dotted path under `root`."""
    parts = dotted.split(".")
    target = root
    for part in parts[:-1]:
        target = target[int(part)] if part.isdigit() else getattr(target, part)
    return target, parts[-1]


class ModelConfig:
    """The parts of ComfyUI's model config packs read: the UNet's settings and the family's latent format."""

    def __init__(self, owner: Any) -> None:
        cfg = owner.unet.config
        self.unet_config = {k: getattr(cfg, k) for k in vars(cfg)} if hasattr(cfg, "__dict__") else {}
        self.unet_config.setdefault("in_channels", getattr(cfg, "in_channels", 4))
        self.latent_format = for_family(owner.family.name)
        self.sampling_settings: dict = {}
        self.family = owner.family.name


# ComfyUI's per-family factor of its activation-memory estimate (its model configs' memory_usage_factor)
MEMORY_USAGE_FACTORS = {"sd1": 1.0, "sd2": 1.0, "sdxl": 0.8, "sdxl_refiner": 1.0}


class BaseModelView:
    """`model.model`: ComfyUI's BaseModel as packs use it, over the DiffusionModel `owner`.

    On ComfyUI this is one object shared by a model and all its clones, and packs set attributes on it (and
    restore them). Attributes the view does not define are therefore kept in the owner's
    `base_model_attributes`, a dict its clones share."""

    def __init__(self, owner: Any) -> None:
        object.__setattr__(self, "_owner", owner)

    def __getattr__(self, name: str) -> Any:
        shared = self.__dict__["_owner"].base_model_attributes
        if name in shared:
            return shared[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(getattr(type(self), name, None), property):
            object.__setattr__(self, name, value)  # a property: its setter, or AttributeError if it has none
        else:
            self._owner.base_model_attributes[name] = value

    def __delattr__(self, name: str) -> None:
        self._owner.base_model_attributes.pop(name, None)

    @property
    def memory_usage_factor(self) -> float:
        """ComfyUI's factor of the activation estimate; a pack may change it (memory_required scales with it)."""
        shared = self._owner.base_model_attributes
        return float(shared.get("memory_usage_factor", MEMORY_USAGE_FACTORS.get(self._owner.family.name, 1.0)))

    @memory_usage_factor.setter
    def memory_usage_factor(self, value: float) -> None:
        self._owner.base_model_attributes["memory_usage_factor"] = float(value)

    @property
    def inner_model(self) -> "BaseModelView":
        """Itself: ComfyUI's sampler wrappers expose the BaseModel as `.inner_model`, and packs' mask and cfg
        functions reach it that way (`extra_options["model"].inner_model.model_sampling`)."""
        return self

    @property
    def diffusion_model(self) -> torch.nn.Module:
        return self._owner.object_patches.get("diffusion_model") or self._owner.unet

    @property
    def latent_format(self) -> Any:
        return self._owner.object_patches.get("latent_format") or for_family(self._owner.family.name)

    @property
    def model_sampling(self) -> Any:
        return self._owner.model_sampling

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig(self._owner)

    @property
    def model_type(self) -> ModelType:
        return ModelType.V_PREDICTION if self._owner.prediction == "v" else ModelType.EPS

    @property
    def device(self) -> torch.device:
        return self._owner.device

    @property
    def manual_cast_dtype(self) -> None:
        return None  # weights are held in the compute dtype

    def get_dtype(self) -> torch.dtype:
        return self._owner.dtype

    def get_dtype_inference(self) -> torch.dtype:
        return self._owner.dtype

    def scale_latent_inpaint(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
                             latent_image: torch.Tensor) -> torch.Tensor:
        """The original latent renoised to `sigma` (what inpainting pins the unmasked part to)."""
        shape = [sigma.shape[0]] + [1] * (noise.ndim - 1)
        return self.model_sampling.noise_scaling(sigma.reshape(shape), noise, latent_image)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        """The UNet's weights under ComfyUI's BaseModel names (`diffusion_model.*`)."""
        return self._owner.model_state_dict()

    def process_latent_in(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(latent)

    def process_latent_out(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(latent)

    def memory_required(self, input_shape: Any) -> int:
        """Working memory for one UNet call on latents of `input_shape` [B, C, H, W], in bytes: 40 KB per latent
        cell and batch item plus 70 MB, an upper bound of the fp32 figures bench/unet_memory.py measured for SD1
        on the CPU (31-69 KB per cell from 256 to 768 pixels), scaled by the compute dtype's width, and by
        memory_usage_factor relative to the family's own (so a pack's change to it scales the estimate)."""
        shape = list(input_shape)
        cells = shape[0] * (shape[2] * shape[3] if len(shape) >= 4 else 1)
        measured = (cells * 40e3 + 70e6) * torch.finfo(self._owner.dtype).bits / 32
        family_factor = MEMORY_USAGE_FACTORS.get(self._owner.family.name, 1.0)
        return int(measured * self.memory_usage_factor / family_factor)

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, c_concat: Optional[torch.Tensor] = None,
                    c_crossattn: Optional[torch.Tensor] = None, control: Optional[dict] = None,
                    transformer_options: Optional[dict] = None, **kwargs: Any) -> torch.Tensor:
        """Denoised x0 for noisy `x` at sigmas `t` (ComfyUI's contract: the timestep argument is sigma)."""
        extra = {"guidance": kwargs["guidance"]} if kwargs.get("guidance") is not None else {}
        return self._owner.apply_model(x, t, c_crossattn, y=kwargs.get("y"), control=control, concat=c_concat,
                                       transformer_options=transformer_options, **extra)


class SDXLModelView(BaseModelView):
    """`model.model` of an SDXL base MODEL (comfy.model_base.SDXL)."""


class SDXLRefinerModelView(BaseModelView):
    """`model.model` of an SDXL refiner MODEL (comfy.model_base.SDXLRefiner)."""
