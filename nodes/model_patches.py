"""Nodes that change how a MODEL samples (on a clone; the loaded weights are shared, never modified)."""
from __future__ import annotations

from diffusion.sampling.guidance import cfg_norm, rescale_cfg
from diffusion.sampling.model_sampling_flow import FlowModelSampling, flux_shift_for_size
from nodes.declare import MAX_RESOLUTION, Boolean, Combo, Float, Int, Output, Socket, node

PREDICTIONS = {"eps": "eps", "v_prediction": "v"}


@node(category="advanced/model", display_name="ModelSamplingDiscrete",
      outputs=[Output("MODEL", tooltip="The model with the chosen prediction type.")])
class ModelSamplingDiscrete:
    """Override a model's prediction type (eps or v) and zero-terminal-SNR setting, when detection got it wrong
    or the model was trained differently."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    sampling = Combo(list(PREDICTIONS), tooltip="What the model predicts: noise (eps) or velocity (v).")
    zsnr = Boolean(False, tooltip="Zero terminal SNR: the schedule ends at pure noise (for models trained so).")

    def run(self, ctx, model, sampling, zsnr):
        patched = model.clone()
        patched.options["prediction"] = PREDICTIONS[sampling]
        patched.options["zsnr"] = bool(zsnr)
        return (patched,)


@node(category="advanced/model", display_name="RescaleCFG",
      outputs=[Output("MODEL", tooltip="The model with rescaled guidance.")])
class RescaleCFG:
    """Rescale classifier-free guidance to avoid over-exposure at high CFG (Lin et al. 2023)."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    multiplier = Float(0.7, min=0.0, max=1.0, step=0.01, tooltip="How much of the rescaled guidance to use.")

    def run(self, ctx, model, multiplier):
        patched = model.clone()
        patched.options["cfg_combine"] = rescale_cfg(multiplier)
        return (patched,)


def differential_mask(strength: float):
    """Differential diffusion (Levin & Fried 2023): at each step, repaint only where the soft mask is at least the
    fraction of the schedule still ahead (by timestep), so grey mask values change less; `strength` < 1 blends
    that binary mask with the soft one."""
    def mask_at(sigma, denoise_mask, extra_options):
        sampling = extra_options["model"].model_sampling
        sigmas = extra_options["sigmas"]
        start = sampling.timestep(sigmas[0])
        end = sampling.timestep(max(float(sigmas[-1]), float(sampling.sigma_min)))
        ahead = (sampling.timestep(sigma.reshape(-1)[0]) - end) / (start - end)  # 1 at the first step, 0 at the end
        binary = (denoise_mask >= ahead).to(denoise_mask.dtype)
        if not strength or strength >= 1:
            return binary
        return strength * binary + (1 - strength) * denoise_mask
    return mask_at


@node(category="_for_testing", display_name="Differential Diffusion", experimental=True,
      outputs=[Output("MODEL", tooltip="The model with per-pixel denoising strength from the mask.")])
class DifferentialDiffusion:
    """Use the inpainting mask's grey levels as per-pixel denoising strength (soft inpainting)."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    strength = Float(1.0, min=0.0, max=1.0, step=0.01, optional=True,
                     tooltip="1: follow the mask's levels exactly; lower blends toward the plain soft mask.")

    def run(self, ctx, model, strength=1.0):
        patched = model.clone()
        patched.set_model_denoise_mask_function(differential_mask(strength))
        return (patched,)


@node(category="advanced/guidance", display_name="CFGNorm", experimental=True,
      outputs=[Output("MODEL", "patched_model", tooltip="The model with the guided prediction's norm limited.")])
class CFGNorm:
    """Limit the guided prediction, pixel by pixel, to the norm of the conditional one (over channels), then scale
    it by `strength`: keeps high CFG from blowing colours out."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    strength = Float(1.0, min=0.0, max=100.0, step=0.01, tooltip="Multiplies the limited prediction (1 keeps it).")

    def run(self, ctx, model, strength):
        patched = model.clone()
        patched.set_model_sampler_post_cfg_function(cfg_norm(strength))
        return (patched,)


def _with_sampling(model, sampling):
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    return patched


@node(category="advanced/model", display_name="ModelSamplingSD3",
      outputs=[Output("MODEL", tooltip="The model sampled as a rectified flow with the shift.")])
class ModelSamplingSD3:
    """Sample as SD3 is trained: rectified flow, timesteps 0..1000, the noise schedule shifted by `shift`."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    shift = Float(3.0, min=0.0, max=100.0, step=0.01, tooltip="Higher spends more steps at high noise "
                                                                "(SD3's default 3.0).")

    multiplier = 1000.0

    def run(self, ctx, model, shift):
        return (_with_sampling(model, FlowModelSampling(shift, self.multiplier, "snr")),)


@node(category="advanced/model", display_name="ModelSamplingAuraFlow",
      outputs=[Output("MODEL", tooltip="The model sampled as a rectified flow with the shift.")])
class ModelSamplingAuraFlow(ModelSamplingSD3):
    """Sample as AuraFlow is trained: rectified flow with timesteps 0..1, the schedule shifted by `shift`."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    shift = Float(1.73, min=0.0, max=100.0, step=0.01, tooltip="Higher spends more steps at high noise.")

    multiplier = 1.0


@node(category="advanced/model", display_name="ModelSamplingFlux",
      outputs=[Output("MODEL", tooltip="The model sampled as Flux is, with the shift for the image size.")])
class ModelSamplingFlux:
    """Sample as Flux is trained: rectified flow with an exponential shift that grows with the image's size, from
    base_shift at 256x256 to max_shift at 1024x1024 (linear in pixels)."""
    model = Socket("MODEL", tooltip="The model to adjust.")
    max_shift = Float(1.15, min=0.0, max=100.0, step=0.01, tooltip="The shift at 1024x1024.")
    base_shift = Float(0.5, min=0.0, max=100.0, step=0.01, tooltip="The shift at 256x256.")
    width = Int(1024, min=16, max=MAX_RESOLUTION, step=8, tooltip="The image width the shift is chosen for.")
    height = Int(1024, min=16, max=MAX_RESOLUTION, step=8, tooltip="The image height the shift is chosen for.")

    def run(self, ctx, model, max_shift, base_shift, width, height):
        mu = flux_shift_for_size(width, height, base_shift, max_shift)
        return (_with_sampling(model, FlowModelSampling(mu, 1.0, "exponential", timesteps=10000)),)


NODES = [ModelSamplingDiscrete, RescaleCFG, DifferentialDiffusion, ModelSamplingSD3, ModelSamplingAuraFlow,
         ModelSamplingFlux, CFGNorm]
