"""The objects that travel on MODEL, CLIP and VAE sockets.

Each wraps the torch modules built by diffusion/ with what the rest of the engine needs to use them: the family
(prediction type, latent scale), the file they came from, and per-socket options. `clone()` is cheap and shares the
weights, so a node that changes an option (CLIP skip, sampling overrides) never alters the object a cached upstream
node returned. LATENT tensors hold raw VAE latents; the MODEL's latent scale is applied when sampling.

Before a network runs, its object asks the device loader (model_management.device_loading, reached through the
residency handle) to make it resident on the compute device; LoRA patches are applied after that, on whatever
tensors each layer then holds (device copies, or host staging for streamed layers), and restored before the model
may be evicted again. Tensors handed back to nodes (latents, images, conditioning) live on the CPU.
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, List, Optional

import torch

from diffusion.precision import compute_dtype, weights_dtype
from model_management.clip_face import CLIPFace
from model_management.device_face import DeviceFace
from model_management.detection import ModelFamily
from model_management.patcher_extension import CallbacksMP, WrapperExecutor, WrappersMP, get_all_wrappers
from model_management.host_streaming import host_stream_of
from model_management.packed_convolutions import packed_convolutions
from model_management.patcher_face import ModelPatcherFace, copy_options
from model_management.precision_policy import policy_of
from model_management.vae_face import VAEFace


class DiffusionModel(ModelPatcherFace):
    """MODEL: the UNet plus how to sample it. It also answers to ComfyUI's ModelPatcher interface (patcher_face.py),
    whose options and object patches sampling honours."""

    def __init__(self, unet: torch.nn.Module, family: ModelFamily, source: str = "",
                 device: Optional[torch.device] = None) -> None:
        self._unet = unet  # a module, or a residency handle (model_management.residency)
        self.family = family
        self.source = source
        self._device = device
        self.options: dict = {}  # sampling overrides (prediction type, zsnr, cfg hooks) set by model nodes
        self.patches: list = []  # (parameter name, patch, strength): LoRAs recorded on this clone
        self.model_options: dict = {"transformer_options": {}}  # ComfyUI's hooks (patcher_face.py)
        self.object_patches: dict = {}
        self.attachments: dict = {}
        self.additional_models: dict = {}
        self.parent: Optional["DiffusionModel"] = None
        # attributes packs set on `model.model` (ComfyUI's BaseModel, one object shared by every clone)
        self.base_model_attributes: dict = {}

    def clone(self) -> "DiffusionModel":
        twin = copy.copy(self)
        twin.options = dict(self.options)
        twin.patches = list(self.patches)
        twin.model_options = copy_options(self.model_options)
        twin.object_patches = dict(self.object_patches)
        twin.attachments = dict(self.attachments)
        twin.additional_models = copy_options(self.additional_models)
        twin.parent = self
        twin.__dict__.pop("_sampling", None)
        twin.__dict__.pop("_explicit_patch", None)
        for callback in twin.get_callbacks(CallbacksMP.ON_CLONE):
            callback(self, twin)
        return twin

    def with_patches(self, specs: list) -> "DiffusionModel":
        twin = self.clone()
        twin.patches.extend(specs)
        return twin

    @property
    def device(self) -> torch.device:
        return _device_of(self._unet, self._device)

    @property
    def dtype(self) -> torch.dtype:
        return run_dtype(self._unet, lambda: self.unet, "unet", self._device)

    def make_resident(self, extra_bytes: int = 0) -> None:
        """Place the UNet on the compute device now (most recently used), without holding it there."""
        loader = _loader_of(self._unet)
        if loader is not None:
            loader.load(self.unet, self.dtype, extra_bytes, keep_resident=_unet_keep)

    @contextlib.contextmanager
    def patched(self):
        """The UNet on the compute device with this clone's patches applied in place, restored bit-exact
        afterwards; on a bf16 CPU its convolutions compute with weights packed once for the run
        (model_management/packed_convolutions.py)."""
        from model_management.hypernetwork import installed
        loader = _loader_of(self._unet)
        with _on_device(loader, self.unet, self.dtype, _unet_keep) as unet, _patched(unet, self.patches, loader), \
                installed(unet, self.options.get("hypernetworks", ())), self.object_patches_applied(unet), \
                _packed_unless_streamed(unet):
            yield unet

    @property
    def unet(self) -> torch.nn.Module:
        from diffusion.handles import resolve
        return resolve(self._unet)

    @property
    def prediction(self) -> str:
        return self.options.get("prediction", self.family.prediction)

    @property
    def latent_scale(self) -> float:
        return self.latent_format.scale_factor

    @property
    def latent_format(self):
        """How raw VAE latents are scaled and shifted for this model (`process_in` / `process_out`), unless a
        node replaced it (object patch `latent_format`)."""
        return self.object_patches.get("latent_format") or self.family.latent_format

    @property
    def model_sampling(self):
        """The family's schedule: SD's discrete one for this model's prediction type (and zero-terminal-SNR
        setting), SD3's rectified flow with shift 3.0; unless a node or pack replaced it (object patch
        `model_sampling`, e.g. ModelSamplingSD3)."""
        patched = self.object_patches.get("model_sampling")
        if patched is not None:
            return patched
        if self.prediction == "flow":
            key: tuple = ("flow", self.family.name, self.family.variant)
        else:
            key = (self.prediction, bool(self.options.get("zsnr", self.family.zero_terminal_snr)))
        cached = self.__dict__.get("_sampling")
        if cached is None or cached[0] != key:
            cached = (key, _default_sampling(key))
            self.__dict__["_sampling"] = cached
        return cached[1]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                y: Optional[torch.Tensor] = None, control: Optional[dict] = None,
                transformer_options: Optional[dict] = None, **extra: Any) -> torch.Tensor:
        """One UNet evaluation on the compute device in its dtype; the output on the caller's device and dtype.
        DIFFUSION_MODEL wrappers in `transformer_options` run around the UNet call. `extra`: conditioning only
        some networks take (Flux dev's `guidance`)."""
        device, dtype = self.device, self.dtype
        if control is not None and device != x.device:  # ControlNet residuals come from where the sampler runs
            control = {k: _to_device(v, device) for k, v in control.items()}
        with _on_device(_loader_of(self._unet), self.unet, dtype, _unet_keep) as unet:
            net = self.object_patches.get("diffusion_model") or unet
            args = (x.to(device, dtype), timesteps.to(device, dtype), context.to(device, dtype),
                    None if y is None else y.to(device, dtype), control, transformer_options)
            extra = {k: v.to(device) if torch.is_tensor(v) else v for k, v in extra.items() if v is not None}
            wrappers = get_all_wrappers(WrappersMP.DIFFUSION_MODEL, transformer_options)
            if wrappers:
                out = WrapperExecutor.new_class_executor(_unet_call(net), net, wrappers).execute(*args, **extra)
            else:
                out = _unet_call(net)(*args, **extra)
        return out.to(x.device, x.dtype)

    def run_outer_sample(self, guidance: Any, inner: Callable, *args: Any) -> Any:
        """A sampler run through this MODEL's OUTER_SAMPLE wrappers (model_management/outer_sample.py)."""
        from model_management.outer_sample import run_outer_sample
        return run_outer_sample(self, guidance, inner, *args)

    def prepare_sampling(self, guidance: Any, noise_shape: Any) -> None:
        """Before a run: the UNet made resident with its working memory kept free, through this MODEL's
        PREPARE_SAMPLING wrappers (model_management/outer_sample.py)."""
        from model_management.outer_sample import run_prepare_sampling
        run_prepare_sampling(self, guidance, noise_shape)

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, context: torch.Tensor,
                    y: Optional[torch.Tensor] = None, control: Optional[dict] = None,
                    concat: Optional[torch.Tensor] = None, transformer_options: Optional[dict] = None,
                    **extra: Any) -> torch.Tensor:
        """The denoised x0 for noisy latents `x` at noise levels `sigma` (one per batch item): input scaling,
        the inpainting channels `concat`, the UNet, and the prediction type's output conversion. APPLY_MODEL
        wrappers run around it (ComfyUI's BaseModel.apply_model, whose `t` is this sigma)."""
        def run(x, t, c_concat=None, c_crossattn=None, control=None, transformer_options=None, **kwargs):
            sampling = self.model_sampling
            x_in = sampling.calculate_input(t, x)
            if c_concat is not None:
                x_in = torch.cat([x_in, c_concat.to(x_in)], dim=1)
            out = self.forward(x_in, sampling.timestep(t).float(), c_crossattn, y=kwargs.get("y"), control=control,
                               transformer_options=transformer_options, guidance=kwargs.get("guidance"))
            return sampling.calculate_denoised(t, out, x)

        wrappers = get_all_wrappers(WrappersMP.APPLY_MODEL, transformer_options)
        call = WrapperExecutor.new_class_executor(run, self.model, wrappers) if wrappers else run
        return call(x, sigma, c_concat=concat, c_crossattn=context, control=control,
                    transformer_options=transformer_options, y=y, **extra)


class TextEncoderModel(CLIPFace):
    """CLIP: the tokenizer and text encoder(s) of a family, with the CLIP-skip setting. It also answers to
    ComfyUI's CLIP interface (clip_face.py: tokenize / encode_from_tokens, tokenizer, cond_stage_model)."""

    def __init__(self, stack: Any, family_name: str, source: str = "") -> None:
        self._stack = stack
        self.family_name = family_name
        self.source = source
        self.clip_skip: Optional[int] = None  # None: the family's default layer
        self.warnings: List[str] = []
        self.patches: list = []

    @property
    def stack(self) -> Any:
        from diffusion.handles import resolve
        return resolve(self._stack)

    def clone(self) -> "TextEncoderModel":
        twin = copy.copy(self)
        twin.warnings = []
        twin.patches = list(getattr(self, "patches", []))
        return twin

    def with_patches(self, specs: list) -> "TextEncoderModel":
        twin = self.clone()
        twin.patches.extend(specs)
        return twin

    @property
    def device(self) -> torch.device:
        return _device_of(self._stack, None)

    @property
    def dtype(self) -> torch.dtype:
        return run_dtype(self._stack, lambda: self.stack, "text_encoder")

    def make_resident(self, extra_bytes: int = 0) -> None:
        loader = _loader_of(self._stack)
        if loader is not None:
            loader.load(self.stack, self.dtype, extra_bytes, keep_resident=None)

    def with_clip_skip(self, layer: int) -> "TextEncoderModel":
        twin = self.clone()
        twin.clip_skip = layer
        return twin

    def encode(self, text: str, text_l: Optional[str] = None) -> tuple:
        """(cond [1, tokens, dim], pooled, warnings), on the CPU in float32. `text_l` is SDXL's separate CLIP-L
        prompt."""
        warnings: List[str] = []
        stack = self.stack
        windows = stack.tokenize(text, warnings)
        if text_l is not None and "clip_l" in windows:
            windows["clip_l"] = stack.tokenize(text_l, warnings)["clip_l"]
            _pad_window_counts(windows, stack)
        cond, pooled = self.encode_windows(windows, warnings)
        return cond, pooled, warnings

    def encode_windows(self, windows: dict, warnings: Optional[List[str]] = None,
                       roles: Optional[List[str]] = None) -> tuple:
        """(cond, pooled) of token windows per encoder role, on the CPU in float32 (LoRA patches applied);
        `roles`: only those encoders."""
        loader = _loader_of(self._stack)
        with _on_device(loader, self.stack, self.dtype, None) as stack, _patched(stack, self.patches, loader):
            cond, pooled = stack.encode(windows, clip_skip=self.clip_skip, warnings=warnings, roles=roles)
        return _to_host(cond), _to_host(pooled)


class ClipVisionOutput:
    """CLIP_VISION_OUTPUT: what encoding images gave (last_hidden_state, penultimate_hidden_state, image_embeds,
    image_sizes), by attribute and by item (`out["image_embeds"]`), as ComfyUI's Output is read."""

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        setattr(self, key, value)

    def __contains__(self, key: str) -> bool:
        return hasattr(self, key)


class ClipVisionModel(DeviceFace):
    """CLIP_VISION: a vision tower (diffusion/vision/clip_vision.py) on the residency manager.
    `encode_image(image, crop)` preprocesses as CLIP was trained (resize, centre crop, normalise) and encodes."""

    def __init__(self, encoder: Any, source: str = "") -> None:
        self._encoder = encoder
        self.source = source
        self._mean_std: Optional[tuple] = None  # set when a pack overrides image_mean / image_std

    @property
    def image_mean(self) -> list:
        return list(self._mean_std[0] if self._mean_std else self.encoder.mean)

    @image_mean.setter
    def image_mean(self, value: Any) -> None:
        self._mean_std = (list(value), self.image_std)

    @property
    def image_std(self) -> list:
        return list(self._mean_std[1] if self._mean_std else self.encoder.std)

    @image_std.setter
    def image_std(self, value: Any) -> None:
        self._mean_std = (self.image_mean, list(value))

    @property
    def encoder(self) -> Any:
        from diffusion.handles import resolve
        return resolve(self._encoder)

    @property
    def model(self) -> Any:
        """ComfyUI's `clip_vision.model`: called as `model(pixel_values=..., intermediate_output=-2)` it gives
        (last_hidden_state, that layer's hidden state, image_embeds, None); other attributes are transformers'
        CLIPVisionModelWithProjection's."""
        return _ComfyVisionCall(self)

    def forward_hidden(self, pixel_values: torch.Tensor, intermediate_output: Any = None) -> tuple:
        """(last hidden state, the `intermediate_output` layer's state or all layers' ("all"), image_embeds), the
        tower on the compute device."""
        loader = _loader_of(self._encoder)
        with _on_device(loader, self.encoder, self.dtype, None) as encoder:
            return encoder.hidden(pixel_values, intermediate_output)

    @property
    def dtype(self) -> torch.dtype:
        """Vision towers follow the text encoders' precision (as ComfyUI's do)."""
        return run_dtype(self._encoder, lambda: self.encoder, "text_encoder")

    def make_resident(self, extra_bytes: int = 0) -> None:
        loader = _loader_of(self._encoder)
        if loader is not None:
            loader.load(self.encoder, self.dtype, extra_bytes, keep_resident=None)

    @property
    def image_size(self) -> int:
        return self.encoder.image_size

    @property
    def device(self) -> torch.device:
        return _device_of(self._encoder, None)

    def get_sd(self) -> dict:
        return self.model.state_dict()

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        from diffusion.vision.clip_vision import clip_preprocess  # noqa: PLC0415
        encoder = self.encoder
        pixels = clip_preprocess(image.float().cpu(), encoder.image_size, self.image_mean, self.image_std, crop)
        last, penultimate, embeds = self.forward_hidden(pixels, -2)
        result = ClipVisionOutput()
        for key, value in (("last_hidden_state", last), ("penultimate_hidden_state", penultimate),
                           ("image_embeds", embeds)):
            result[key] = _to_host(value)
        result["image_sizes"] = [tuple(pixels.shape[1:])] * pixels.shape[0]
        return result


class _ComfyVisionCall:
    """`clip_vision.model` for packs (see ClipVisionModel.model)."""

    def __init__(self, owner: ClipVisionModel) -> None:
        self._owner = owner

    def __call__(self, pixel_values: torch.Tensor, attention_mask: Any = None,
                 intermediate_output: Any = None) -> tuple:
        return (*self._owner.forward_hidden(pixel_values, intermediate_output), None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner.encoder.model, name)


def _default_sampling(key: tuple) -> Any:
    """A family's own schedule: ("flow", family, variant) a rectified flow -- SD3's (shift 3.0, timestep =
    1000 sigma), Flux dev's (exponential shift 1.15 over 10000 steps, timestep = sigma), Flux schnell's (no shift,
    timestep = sigma) --, else the discrete SD schedule for (prediction, zero terminal SNR)."""
    if key[0] == "flow":
        from diffusion.sampling.model_sampling_flow import FlowModelSampling
        if key[1] == "flux" and key[2] == "dev":
            return FlowModelSampling(shift=1.15, multiplier=1.0, kind="exponential", timesteps=10000)
        if key[1] == "flux":
            return FlowModelSampling(shift=1.0, multiplier=1.0, kind="snr")
        return FlowModelSampling(shift=3.0, multiplier=1000.0, kind="snr")
    from diffusion.sampling.model_sampling import DiscreteModelSampling
    return DiscreteModelSampling(prediction=key[0], zero_terminal_snr=key[1])


def _unet_call(net: Any) -> Callable:
    """net(x, t, context, y, control, transformer_options) for our UNet (or a pack's replacement module)."""
    def call(x, t, context, y=None, control=None, transformer_options=None, **kwargs):
        extra = {"guidance": kwargs["guidance"]} if kwargs.get("guidance") is not None else {}
        if transformer_options is None:
            return net(x, t, context, y=y, control=control, **extra)
        return net(x, t, context, y=y, control=control, transformer_options=transformer_options, **extra)
    return call


def release_device(obj: Any) -> None:
    """Drop the device copies of a MODEL/CLIP/VAE's network, so that its parameters are the host weights again:
    call before reading weights for saving or merging (on a GPU the loaded copies are in the compute dtype)."""
    for attr in ("_unet", "_stack", "_vae"):
        handle = getattr(obj, attr, None)
        loader = _loader_of(handle)
        if loader is not None:
            loader.unload(handle.get())


def _loader_of(handle: Any) -> Any:
    """The device loader of the residency manager a handle belongs to (None for bare modules: they stay put)."""
    return getattr(getattr(handle, "residency", None), "devices", None)


def _device_of(handle: Any, explicit: Optional[torch.device]) -> torch.device:
    if explicit is not None:
        return explicit
    loader = _loader_of(handle)
    return loader.device if loader is not None else torch.device("cpu")


def run_dtype(handle: Any, module: Callable[[], Any], part: str, explicit: Optional[torch.device] = None
              ) -> torch.dtype:
    """The dtype a network computes in: its part's under the precision policy when the device loader places it
    (it converts while copying), else on a CPU the dtype its weights were loaded in (the policy applied then), on
    an accelerator that device's default."""
    loader = _loader_of(handle)
    if loader is not None and loader.active:
        return policy_of(loader).dtype_for(part)
    device = _device_of(handle, explicit)
    if device.type != "cpu":
        return compute_dtype(device, for_vae=part == "vae")
    return weights_dtype(module())


def _on_device(loader: Any, module: Any, dtype: torch.dtype, keep: Any):
    return loader.use(module, dtype, keep_resident=keep) if loader is not None else contextlib.nullcontext(module)


def _to_device(value: Any, device: torch.device) -> Any:
    """Tensors, and lists of them (None entries kept), moved to `device`."""
    if torch.is_tensor(value):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _to_host(tensor: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return None if tensor is None else tensor.to("cpu", torch.float32)


def _unet_keep(name: str, module: Any) -> bool:
    """UNet layers never streamed: `time_embed.0`, whose weight's dtype the UNet casts its inputs to."""
    return name == "time_embed.0"


def _vae_keep(name: str, module: Any) -> bool:
    """VAE layers never streamed: the ones whose weights are read outside their own forward (the input layers
    whose device and dtype the VAE moves its input to, and the q/k/v/proj 1x1 convs attention blocks multiply by
    directly)."""
    if name in ("encoder.conv_in", "post_quant_conv", "decoder.conv_in"):
        return True
    parent, _, leaf = name.rpartition(".")
    return leaf in ("q", "k", "v", "proj_out") and ".attn" in "." + parent


def _packed_unless_streamed(unet: Any):
    """Packed convolutions for the run, except for a network streamed from its file: packing would make a
    second copy of weights whose point is not to be held."""
    if host_stream_of(unet) is not None:
        return contextlib.nullcontext(unet)
    return packed_convolutions(unet, channels_last=True)


@contextlib.contextmanager
def _patched(module: Any, specs: list, loader: Any = None):
    """`module` with `specs` applied in place for the block, or per layer call when the module is streamed from
    its file (model_management/forward_patches.py: no patched copy of the whole network is held)."""
    if not specs:
        yield module
        return
    if host_stream_of(module) is not None:
        from model_management.forward_patches import patched_per_forward
        with patched_per_forward(module, specs):
            yield module
        return
    from model_management.weight_patches import WeightPatcher
    patcher = WeightPatcher(module, specs)
    patcher.apply()
    try:
        yield module
    finally:
        if loader is not None:
            loader.synchronize()  # streaming copies may still read the staging tensors being restored
        patcher.restore()


def _pad_window_counts(windows: dict, stack: Any) -> None:
    """Separate prompts per encoder may need different numbers of 77-token windows; pad with empty prompts."""
    from diffusion.text import empty_window
    longest = max(len(w) for w in windows.values())
    for enc in stack.encoders:
        role_windows = windows[enc.role]
        while len(role_windows) < longest:
            role_windows.append(empty_window(stack.tokenizer.start_id, stack.tokenizer.end_id, enc.pad_id,
                                             enc.window))


class VAEModel(VAEFace):
    """VAE: pixels <-> latents. Images are [B, H, W, C] in 0..1; latents raw (unscaled). It also answers to
    ComfyUI's VAE interface (vae_face.py)."""

    def __init__(self, vae: torch.nn.Module, source: str = "", device: Optional[torch.device] = None) -> None:
        self._vae = vae
        self.source = source
        self._device = device

    @property
    def vae(self) -> torch.nn.Module:
        from diffusion.handles import resolve
        return resolve(self._vae)

    @property
    def device(self) -> torch.device:
        return _device_of(self._vae, self._device)

    @property
    def dtype(self) -> torch.dtype:
        return run_dtype(self._vae, lambda: self.vae, "vae", self._device)

    def make_resident(self, extra_bytes: int = 0) -> None:
        loader = _loader_of(self._vae)
        if loader is not None:
            loader.load(self.vae, self.dtype, extra_bytes, keep_resident=_vae_keep)

    def _on_device(self):
        return _on_device(_loader_of(self._vae), self.vae, self.dtype, _vae_keep)

    @property
    def downscale(self) -> int:
        return int(self.vae.downscale_factor)

    def _pixels(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[-1] < 3:
            raise ValueError(f"expected an IMAGE [B, H, W, C], got shape {list(image.shape)}")
        f = self.downscale
        h, w = (image.shape[1] // f) * f, (image.shape[2] // f) * f
        if h == 0 or w == 0:
            raise ValueError(f"the image ({image.shape[2]}x{image.shape[1]}) is smaller than the VAE's factor {f}")
        top, left = (image.shape[1] - h) // 2, (image.shape[2] - w) // 2  # centre-crop to a multiple of f
        image = image[:, top:top + h, left:left + w, :3]
        return self.process_input(image.movedim(-1, 1).to(self.device, self.dtype))

    def _image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.process_output(pixels.float()).movedim(1, -1).cpu()

    @torch.inference_mode()
    def encode(self, image: torch.Tensor, batch: int = 4,
               interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        pixels = self._pixels(image)
        parts = []
        with self._on_device() as vae:
            for start in range(0, pixels.shape[0], batch):
                if interrupt:
                    interrupt()
                parts.append(vae.encode(pixels[start:start + batch]).float().cpu())
        return torch.cat(parts)

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor, batch: int = 4,
               interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        if latent.ndim != 4:
            raise ValueError(f"expected LATENT samples [B, C, H, W], got shape {list(latent.shape)}")
        parts = []
        with self._on_device() as vae:
            for start in range(0, latent.shape[0], batch):
                if interrupt:
                    interrupt()
                parts.append(self._image(vae.decode(latent[start:start + batch].to(self.device, self.dtype))))
        return torch.cat(parts)

    @torch.inference_mode()
    def _decode_tiled(self, latent: torch.Tensor, tile: int, overlap: int,
                     progress: Optional[Callable[[int, int], None]] = None,
                     interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        from diffusion.vae.tiling import decode_tiled
        with self._on_device() as vae:
            out = decode_tiled(vae, latent.to(self.device, self.dtype), tile=tile, overlap=overlap,
                               progress=progress, interrupt=interrupt)
        return self._image(out)

    @torch.inference_mode()
    def _encode_tiled(self, image: torch.Tensor, tile: int, overlap: int,
                     progress: Optional[Callable[[int, int], None]] = None,
                     interrupt: Optional[Callable[[], None]] = None) -> torch.Tensor:
        from diffusion.vae.tiling import encode_tiled
        with self._on_device() as vae:
            return encode_tiled(vae, self._pixels(image), tile=tile, overlap=overlap, progress=progress,
                                interrupt=interrupt).float().cpu()
