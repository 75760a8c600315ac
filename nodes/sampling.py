"""The KSampler nodes: denoise latents with a MODEL guided by positive and negative conditioning."""
from __future__ import annotations

from diffusion.sampling import sampler_names, scheduler_names
from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas, prepare_noise, sample, slice_sigmas
from nodes.declare import Combo, Float, Int, Output, Socket, node

SEED_MAX = 0xFFFFFFFFFFFFFFFF
SAMPLER_TIP = "The sampling algorithm: euler is simple and robust; dpmpp_2m and uni_pc are good at few steps."
SCHEDULER_TIP = "How noise levels are spaced over the steps: normal, karras and simple are common choices."


def sampler_combo(**kw):
    return Combo(lambda services: sampler_names(), default="euler", tooltip=SAMPLER_TIP, **kw)


def scheduler_combo(**kw):
    return Combo(lambda services: scheduler_names(), default="normal", tooltip=SCHEDULER_TIP, **kw)


def wants_previews(ctx) -> bool:
    """The job's `extra_data.preview_method`, else the server's `--preview-method` (default none)."""
    method = (ctx.extra_data or {}).get("preview_method")
    if method is None and ctx.services is not None:
        method = ctx.services.settings.get("preview_method")
    return method not in ("none", None)


def progress_callback(ctx, model, previews: bool = True):
    """Per step: progress, an interrupt check, and (when asked) a latent preview."""
    from diffusion.latent_preview import preview_image
    show = previews and ctx is not None and wants_previews(ctx)

    def callback(step: int, total: int, x, denoised) -> None:
        if ctx is None:
            return
        preview = None
        if show:
            preview = ("JPEG", preview_image(denoised, model.family.name), 512)
        ctx.progress(step + 1, total, preview)
    return callback


def _latent(latent_image) -> tuple:
    if not isinstance(latent_image, dict) or "samples" not in latent_image:
        raise ValueError("latent_image is not a LATENT (a dict with 'samples')")
    return latent_image["samples"], latent_image.get("noise_mask"), latent_image.get("batch_index")


def common_ksampler(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                    denoise=1.0, disable_noise=False, start_step=None, last_step=None, force_full_denoise=False):
    samples, noise_mask, batch_index = _latent(latent_image)
    noise = samples.new_zeros(samples.shape) if disable_noise else prepare_noise(samples, seed, batch_index)
    sigmas = calculate_sigmas(model, scheduler, steps, denoise, sampler_name)
    sigmas = slice_sigmas(sigmas, start_step, last_step, force_full_denoise)
    out, _ = sample(model, noise, positive, negative, cfg, SamplerChoice(sampler_name), sigmas, samples, seed,
                    noise_mask, progress_callback(ctx, model))
    result = dict(latent_image)
    result["samples"] = out
    return result


@node(category="sampling", display_name="KSampler",
      outputs=[Output("LATENT", tooltip="The denoised latents.")])
class KSampler:
    """Denoise latents step by step with a model, guided by a positive and a negative prompt."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True,
               tooltip="The random seed: the same seed and settings give the same image.")
    steps = Int(20, min=1, max=10000, tooltip="How many denoising steps.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                tooltip="Classifier-free guidance: how strongly to follow the prompt (1 disables the negative).")
    sampler_name = sampler_combo()
    scheduler = scheduler_combo()
    positive = Socket("CONDITIONING", tooltip="What the image should show.")
    negative = Socket("CONDITIONING", tooltip="What the image should not show.")
    latent_image = Socket("LATENT", tooltip="The latents to denoise (empty for text-to-image).")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01,
                    tooltip="How much to change the input: 1 replaces it entirely, lower keeps more (img2img).")

    def run(self, ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
            denoise=1.0):
        return (common_ksampler(ctx, model, seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                latent_image, denoise),)


@node(category="sampling", display_name="KSampler (Advanced)",
      outputs=[Output("LATENT", tooltip="The latents after the chosen steps.")])
class KSamplerAdvanced:
    """KSampler with control over noise and which steps run (for base + refiner chains)."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    add_noise = Combo(["enable", "disable"], tooltip="Add the seed's noise first (disable to continue a chain).")
    noise_seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True, tooltip="The random seed.")
    steps = Int(20, min=1, max=10000, tooltip="Steps of the full schedule.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale.")
    sampler_name = sampler_combo()
    scheduler = scheduler_combo()
    positive = Socket("CONDITIONING", tooltip="What the image should show.")
    negative = Socket("CONDITIONING", tooltip="What the image should not show.")
    latent_image = Socket("LATENT", tooltip="The latents to denoise.")
    start_at_step = Int(0, min=0, max=10000, tooltip="First step of the schedule to run.")
    end_at_step = Int(10000, min=0, max=10000, tooltip="Step to stop at (the rest is left for another sampler).")
    return_with_leftover_noise = Combo(["disable", "enable"],
                                       tooltip="Keep the remaining noise when stopping early (enable for chains).")

    def run(self, ctx, model, add_noise, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
            latent_image, start_at_step, end_at_step, return_with_leftover_noise):
        return (common_ksampler(ctx, model, noise_seed, steps, cfg, sampler_name, scheduler, positive, negative,
                                latent_image, 1.0, disable_noise=add_noise == "disable", start_step=start_at_step,
                                last_step=end_at_step,
                                force_full_denoise=return_with_leftover_noise != "enable"),)


@node(category="latent/inpaint", display_name="Set Latent Noise Mask",
      outputs=[Output("LATENT", tooltip="The latents with a mask: only the masked part is resampled.")])
class SetLatentNoiseMask:
    """Limit sampling to a masked region of the latents (inpainting with any model)."""
    samples = Socket("LATENT", tooltip="The latents (usually from VAE Encode).")
    mask = Socket("MASK", tooltip="Where to resample (1) and where to keep the input (0).")

    def run(self, ctx, samples, mask):
        out = dict(samples)
        out["noise_mask"] = mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1]))
        return (out,)


NODES = [KSampler, KSamplerAdvanced, SetLatentNoiseMask]
