"""Loader nodes: checkpoints, VAEs, text encoders and bare diffusion models from the model folders."""
from __future__ import annotations

from nodes.declare import Combo, Output, node


def files(kind: str):
    """A combo whose choices are the files of a model folder, read fresh each time."""
    return lambda services: services.paths.list_files(kind) if services is not None else []


def _path(ctx, kind: str, name: str) -> str:
    return ctx.services.paths.require(kind, name)


def _residency(ctx):
    """The model manager that owns loaded weights (None: load directly, e.g. in minimal setups)."""
    return getattr(ctx.services, "models", None) if ctx.services is not None else None


def _embeddings(ctx):
    """A lookup `name -> path or None` over the embeddings folder, for `embedding:name` in prompts."""
    paths = ctx.services.paths

    def find(name: str):
        for candidate in paths.list_files("embeddings"):
            stem = candidate.rsplit(".", 1)[0]
            if candidate == name or stem == name or stem.rsplit("/", 1)[-1] == name:
                return paths.full_path("embeddings", candidate)
        return None
    return find


def _read_parameterization(config_path: str):
    """`model.params.parameterization` of an original-style inference YAML ("v" for the 768-v models)."""
    import yaml
    with open(config_path, encoding="utf-8") as f:
        config = yaml.safe_load(f) or {}
    params = ((config.get("model") or {}).get("params") or {}) if isinstance(config, dict) else {}
    value = params.get("parameterization")
    if value is None:
        return None
    if value not in ("eps", "v"):
        raise ValueError(f"{config_path}: unknown parameterization {value!r} (eps or v)")
    return value


@node(category="loaders", display_name="Load Checkpoint",
      outputs=[Output("MODEL", tooltip="The diffusion model (UNet) that denoises latents."),
               Output("CLIP", tooltip="The text encoder(s) that turn prompts into conditioning."),
               Output("VAE", tooltip="The autoencoder between pixels and latents.")])
class CheckpointLoaderSimple:
    """Load an SD1.x, SD2.x, SDXL, SD3.x or Flux.1 checkpoint; its family is detected from the weights. A file
    without text encoders gives no CLIP: load them with TripleCLIPLoader (SD3) or DualCLIPLoader (Flux)."""
    ckpt_name = Combo(files("checkpoints"), tooltip="The checkpoint file (models/checkpoints).")

    def run(self, ctx, ckpt_name):
        return _load_checkpoint(ctx, ckpt_name, None)


def _load_checkpoint(ctx, ckpt_name, prediction):
    from model_management.checkpoints import load_checkpoint
    path = _path(ctx, "checkpoints", ckpt_name)
    models = _residency(ctx)
    if models is not None:
        loaded = models.load_checkpoint(path, prediction=prediction, embeddings=_embeddings(ctx))
    else:
        loaded = load_checkpoint(path, prediction=prediction, embeddings=_embeddings(ctx))
    return (loaded.model, loaded.clip, loaded.vae)


@node(category="advanced/loaders", display_name="Load Checkpoint With Config (DEPRECATED)", deprecated=True,
      outputs=[Output("MODEL", tooltip="The diffusion model."), Output("CLIP", tooltip="The text encoder(s)."),
               Output("VAE", tooltip="The autoencoder.")])
class CheckpointLoader:
    """Load a checkpoint with an original inference YAML (e.g. v-inference.yaml to force v-prediction)."""
    config_name = Combo(files("configs"), tooltip="The inference config (models/configs).")
    ckpt_name = Combo(files("checkpoints"), tooltip="The checkpoint file (models/checkpoints).")

    def run(self, ctx, config_name, ckpt_name):
        prediction = _read_parameterization(_path(ctx, "configs", config_name))
        return _load_checkpoint(ctx, ckpt_name, prediction)


@node(category="loaders", display_name="Load VAE", outputs=[Output("VAE", tooltip="The autoencoder.")])
class VAELoader:
    """Load a standalone VAE (for example an improved SD1 or SDXL VAE)."""
    vae_name = Combo(files("vae"), tooltip="The VAE file (models/vae).")

    def run(self, ctx, vae_name):
        from model_management.checkpoints import load_vae_file
        models, path = _residency(ctx), _path(ctx, "vae", vae_name)
        return (models.load_vae(path) if models is not None else load_vae_file(path),)


@node(category="advanced/loaders", display_name="Load CLIP", outputs=[Output("CLIP", tooltip="The text encoder.")])
class CLIPLoader:
    """Load a standalone text encoder. stable_diffusion: CLIP-L (SD1) or OpenCLIP-H (SD2), detected from the
    weights; sd3: T5-XXL alone (or one of SD3's CLIPs)."""
    clip_name = Combo(files("clip"), tooltip="The text encoder file (models/clip or models/text_encoders).")
    type = Combo(["stable_diffusion", "sd3"], tooltip="The model family it is for.")
    device = Combo(["default", "cpu"], optional=True, advanced=True, tooltip="Where to run it.")

    def run(self, ctx, clip_name, type, device="default"):
        return (_load_text(ctx, [_path(ctx, "clip", clip_name)], type),)


@node(category="advanced/loaders", display_name="DualCLIPLoader",
      outputs=[Output("CLIP", tooltip="The two text encoders, used together.")])
class DualCLIPLoader:
    """Load two text encoders from separate files. sdxl: CLIP-L and OpenCLIP-bigG; sd3: any two of CLIP-L, CLIP-G
    and T5-XXL; flux: CLIP-L and T5-XXL (each file's role is detected from its weights)."""
    clip_name1 = Combo(files("clip"), tooltip="The first text encoder file.")
    clip_name2 = Combo(files("clip"), tooltip="The second text encoder file.")
    type = Combo(["sdxl", "sd3", "flux"], tooltip="The model family they are for.")
    device = Combo(["default", "cpu"], optional=True, advanced=True, tooltip="Where to run them.")

    def run(self, ctx, clip_name1, clip_name2, type, device="default"):
        return (_load_text(ctx, [_path(ctx, "clip", clip_name1), _path(ctx, "clip", clip_name2)], type),)


@node(category="advanced/loaders", display_name="TripleCLIPLoader",
      outputs=[Output("CLIP", tooltip="The three text encoders, used together.")])
class TripleCLIPLoader:
    """Load SD3's three text encoders (CLIP-L, CLIP-G, T5-XXL) from separate files, in any order (each file's role
    is detected from its weights)."""
    clip_name1 = Combo(files("clip"), tooltip="The first text encoder file (e.g. clip_l.safetensors).")
    clip_name2 = Combo(files("clip"), tooltip="The second text encoder file (e.g. clip_g.safetensors).")
    clip_name3 = Combo(files("clip"), tooltip="The third text encoder file (e.g. t5xxl_fp16.safetensors).")

    def run(self, ctx, clip_name1, clip_name2, clip_name3):
        paths = [_path(ctx, "clip", name) for name in (clip_name1, clip_name2, clip_name3)]
        return (_load_text(ctx, paths, "sd3"),)


@node(category="advanced/loaders", display_name="Load Diffusion Model",
      outputs=[Output("MODEL", tooltip="The diffusion model.")])
class UNETLoader:
    """Load a bare diffusion model file (an SD1.x/SD2.x/SDXL UNet, an SD3/SD3.5 MMDiT or a Flux.1 transformer,
    original or diffusers key layout); pair it with a text encoder and a VAE."""
    unet_name = Combo(files("unet"), tooltip="The UNet file (models/unet or models/diffusion_models).")
    weight_dtype = Combo(["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"],
                         tooltip="How the weights are kept in memory: default, the compute precision; fp8 keeps "
                                 "them in 8-bit floats (half of fp16's memory) and casts each layer to the compute "
                                 "precision as it runs. fp8_e4m3fn_fast is the same as fp8_e4m3fn here: "
                                 "ComfyUI's fp8 matrix multiplies on recent GPUs are not used.")

    def run(self, ctx, unet_name, weight_dtype):
        from model_management.checkpoints import load_unet_file
        from model_management.weight_casting import STORAGE_DTYPES, store_in
        models, path = _residency(ctx), _path(ctx, "unet", unet_name)
        storage = STORAGE_DTYPES.get(weight_dtype)
        if models is not None:
            return (models.load_unet(path, storage),)
        model = load_unet_file(path)
        if storage is not None:
            store_in(model.unet, storage, model.dtype)
        return (model,)


def _load_text(ctx, paths, kind):
    from model_management.text_encoder_files import load_text_encoder_files
    models = _residency(ctx)
    if models is not None:
        return models.load_text_encoders(paths, kind, _embeddings(ctx))
    return load_text_encoder_files(paths, kind, _embeddings(ctx))


NODES = [CheckpointLoaderSimple, CheckpointLoader, VAELoader, CLIPLoader, DualCLIPLoader, TripleCLIPLoader, UNETLoader]
