"""Custom sampling: samplers, schedules, noise and guiders as separate pieces, assembled by SamplerCustom(Advanced).

SIGMAS is a 1-D tensor; the NOISE, GUIDER and SAMPLER objects (with ComfyUI's interfaces, which packs build and
subclass) are in nodes/sampling_objects.py.
"""
from __future__ import annotations

import re

import torch

from diffusion.sampling.ksampler import SamplerChoice, calculate_sigmas
from nodes.sampling_objects import Guider, NoNoise, RandomNoiseSource
from nodes.declare import Boolean, Combo, Float, Int, Output, Socket, String, node
from nodes.sampling import SEED_MAX, progress_callback, sampler_combo, scheduler_combo

SIGMA_MAX, SIGMA_MIN = 14.614642, 0.0291675


def _sample_custom(ctx, guider, noise, sampler, sigmas, latent_image):
    samples = latent_image["samples"]
    model = guider.model_patcher
    if isinstance(guider, Guider):
        out, denoised = guider.sample_both(noise.generate_noise(latent_image), samples, sampler, sigmas,
                                           latent_image.get("noise_mask"), progress_callback(ctx, model),
                                           noise.seed)
    else:  # a pack's own guider class with ComfyUI's interface only
        out = guider.sample(noise.generate_noise(latent_image), samples, sampler, sigmas,
                            denoise_mask=latent_image.get("noise_mask"), seed=noise.seed)
        denoised = out
    first, second = dict(latent_image), dict(latent_image)
    first["samples"], second["samples"] = out, denoised
    return first, second


@node(category="sampling/custom_sampling", display_name="SamplerCustom",
      outputs=[Output("LATENT", "output", tooltip="The sampled latents."),
               Output("LATENT", "denoised_output", tooltip="The model's final clean estimate.")])
class SamplerCustom:
    """Sample with a separately chosen sampler and schedule (CFG guidance)."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    add_noise = Boolean(True, tooltip="Add the seed's noise first.")
    noise_seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True, tooltip="The random seed.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Classifier-free guidance scale.")
    positive = Socket("CONDITIONING", tooltip="What the image should show.")
    negative = Socket("CONDITIONING", tooltip="What the image should not show.")
    sampler = Socket("SAMPLER", tooltip="The sampling algorithm (KSamplerSelect).")
    sigmas = Socket("SIGMAS", tooltip="The noise schedule (a scheduler node).")
    latent_image = Socket("LATENT", tooltip="The latents to denoise.")

    def run(self, ctx, model, add_noise, noise_seed, cfg, positive, negative, sampler, sigmas, latent_image):
        noise = RandomNoiseSource(noise_seed) if add_noise else NoNoise(noise_seed)
        return _sample_custom(ctx, Guider(model, positive, negative, cfg), noise, sampler, sigmas, latent_image)


@node(category="sampling/custom_sampling", display_name="SamplerCustomAdvanced",
      outputs=[Output("LATENT", "output", tooltip="The sampled latents."),
               Output("LATENT", "denoised_output", tooltip="The model's final clean estimate.")])
class SamplerCustomAdvanced:
    """Sample from separate noise, guider, sampler and schedule pieces."""
    noise = Socket("NOISE", tooltip="The starting noise (RandomNoise or DisableNoise).")
    guider = Socket("GUIDER", tooltip="Model and conditioning (CFGGuider, BasicGuider, DualCFGGuider).")
    sampler = Socket("SAMPLER", tooltip="The sampling algorithm.")
    sigmas = Socket("SIGMAS", tooltip="The noise schedule.")
    latent_image = Socket("LATENT", tooltip="The latents to denoise.")

    def run(self, ctx, noise, guider, sampler, sigmas, latent_image):
        return _sample_custom(ctx, guider, noise, sampler, sigmas, latent_image)


@node(category="sampling/custom_sampling/samplers", display_name="KSamplerSelect",
      outputs=[Output("SAMPLER", tooltip="The chosen sampler.")])
class KSamplerSelect:
    """Pick a sampling algorithm by name."""
    sampler_name = sampler_combo()

    def run(self, ctx, sampler_name):
        return (SamplerChoice(sampler_name),)


@node(category="sampling/custom_sampling/schedulers", display_name="BasicScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class BasicScheduler:
    """A named noise schedule for a model."""
    model = Socket("MODEL", tooltip="The model whose noise levels to use.")
    scheduler = scheduler_combo()
    steps = Int(20, min=1, max=10000, tooltip="How many steps.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="Below 1: only the last part of the schedule.")

    def run(self, ctx, model, scheduler, steps, denoise):
        return (calculate_sigmas(model, scheduler, steps, denoise),)


def _helper(name: str):
    from diffusion.sampling import schedulers
    return getattr(schedulers, name)


@node(category="sampling/custom_sampling/schedulers", display_name="KarrasScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class KarrasScheduler:
    """The Karras et al. (2022) schedule between two noise levels."""
    steps = Int(20, min=1, max=10000, tooltip="How many steps.")
    sigma_max = Float(SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False, tooltip="Highest noise level.")
    sigma_min = Float(SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False, tooltip="Lowest noise level.")
    rho = Float(7.0, min=0.0, max=100.0, step=0.01, round=False, tooltip="Curvature: higher spends more steps low.")

    def run(self, ctx, steps, sigma_max, sigma_min, rho):
        return (_helper("karras_sigmas")(steps, sigma_min, sigma_max, rho),)


@node(category="sampling/custom_sampling/schedulers", display_name="ExponentialScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class ExponentialScheduler:
    """Noise levels evenly spaced in log sigma."""
    steps = Int(20, min=1, max=10000, tooltip="How many steps.")
    sigma_max = Float(SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False, tooltip="Highest noise level.")
    sigma_min = Float(SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False, tooltip="Lowest noise level.")

    def run(self, ctx, steps, sigma_max, sigma_min):
        return (_helper("exponential_sigmas")(steps, sigma_min, sigma_max),)


@node(category="sampling/custom_sampling/schedulers", display_name="PolyexponentialScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class PolyexponentialScheduler:
    """Noise levels polynomial in log sigma (rho 1 is exponential)."""
    steps = Int(20, min=1, max=10000, tooltip="How many steps.")
    sigma_max = Float(SIGMA_MAX, min=0.0, max=5000.0, step=0.01, round=False, tooltip="Highest noise level.")
    sigma_min = Float(SIGMA_MIN, min=0.0, max=5000.0, step=0.01, round=False, tooltip="Lowest noise level.")
    rho = Float(1.0, min=0.0, max=100.0, step=0.01, round=False, tooltip="Polynomial degree.")

    def run(self, ctx, steps, sigma_max, sigma_min, rho):
        return (_helper("polyexponential_sigmas")(steps, sigma_min, sigma_max, rho),)


@node(category="sampling/custom_sampling/schedulers", display_name="SDTurboScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class SDTurboScheduler:
    """The few-step schedule of SD-Turbo / SDXL-Turbo."""
    model = Socket("MODEL", tooltip="The model whose noise levels to use.")
    steps = Int(1, min=1, max=10, tooltip="How many steps (1 to 4 are typical).")
    denoise = Float(1.0, min=0, max=1.0, step=0.01, tooltip="Below 1: start from a lower noise level.")

    def run(self, ctx, model, steps, denoise):
        return (_helper("sd_turbo_sigmas")(model.model_sampling, steps, denoise),)


@node(category="sampling/custom_sampling/schedulers", display_name="BetaSamplingScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class BetaSamplingScheduler:
    """Timesteps placed at Beta(alpha, beta) quantiles (more steps at both ends with the defaults)."""
    model = Socket("MODEL", tooltip="The model whose noise levels to use.")
    steps = Int(20, min=1, max=10000, tooltip="How many steps.")
    alpha = Float(0.6, min=0.0, max=50.0, step=0.01, round=False, tooltip="Beta distribution alpha.")
    beta = Float(0.6, min=0.0, max=50.0, step=0.01, round=False, tooltip="Beta distribution beta.")

    def run(self, ctx, model, steps, alpha, beta):
        return (_helper("beta_sigmas")(model.model_sampling, steps, alpha, beta),)


@node(category="sampling/custom_sampling/sigmas", display_name="SplitSigmas",
      outputs=[Output("SIGMAS", "high_sigmas", tooltip="The schedule up to the split step."),
               Output("SIGMAS", "low_sigmas", tooltip="The schedule from the split step on.")])
class SplitSigmas:
    """Split a schedule at a step (both halves share the step's sigma)."""
    sigmas = Socket("SIGMAS", tooltip="The schedule to split.")
    step = Int(0, min=0, max=10000, tooltip="Where to split.")

    def run(self, ctx, sigmas, step):
        return (sigmas[:step + 1], sigmas[step:])


@node(category="sampling/custom_sampling/sigmas", display_name="SplitSigmasDenoise",
      outputs=[Output("SIGMAS", "high_sigmas", tooltip="The first part of the schedule."),
               Output("SIGMAS", "low_sigmas", tooltip="The last `denoise` fraction of the schedule.")])
class SplitSigmasDenoise:
    """Split a schedule so the second part covers the last `denoise` fraction of the steps."""
    sigmas = Socket("SIGMAS", tooltip="The schedule to split.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="Fraction of steps in the second part.")

    def run(self, ctx, sigmas, denoise):
        steps = max(len(sigmas) - 1, 0)
        split = steps - round(steps * denoise)
        return (sigmas[:split + 1], sigmas[split:])


@node(category="sampling/custom_sampling/sigmas", display_name="FlipSigmas",
      outputs=[Output("SIGMAS", tooltip="The schedule reversed (for unsampling).")])
class FlipSigmas:
    """Reverse a schedule: go from clean to noisy (a first sigma of 0 is nudged to 1e-4)."""
    sigmas = Socket("SIGMAS", tooltip="The schedule to reverse.")

    def run(self, ctx, sigmas):
        if len(sigmas) == 0:
            return (sigmas,)
        flipped = sigmas.flip(0).clone()
        if flipped[0] == 0:
            flipped[0] = 0.0001
        return (flipped,)


@node(category="sampling/custom_sampling/sigmas", display_name="SetFirstSigma",
      outputs=[Output("SIGMAS", tooltip="The schedule with its first sigma replaced.")])
class SetFirstSigma:
    """Replace a schedule's first sigma (how much noise sampling starts from)."""
    sigmas = Socket("SIGMAS", tooltip="The schedule to change.")
    sigma = Float(136.0, min=0.0, max=20000.0, step=0.001, round=False, tooltip="The new first sigma.")

    def run(self, ctx, sigmas, sigma):
        sigmas = sigmas.clone()
        if len(sigmas):
            sigmas[0] = sigma
        return (sigmas,)


_NUMBER = re.compile(r"[-+]?(?:\d*\.*\d+)")


@node(category="sampling/custom_sampling/sigmas", display_name="ManualSigmas",
      outputs=[Output("SIGMAS", tooltip="The schedule as written.")])
class ManualSigmas:
    """A schedule written out by hand: the numbers in the text, in order (commas, spaces, anything between)."""
    sigmas = String("1, 0.5", tooltip="The sigmas, e.g. '1, 0.725, 0.42, 0'.")

    def run(self, ctx, sigmas):
        return (torch.tensor([float(n) for n in _NUMBER.findall(sigmas)], dtype=torch.float32),)


@node(category="sampling/custom_sampling/noise", display_name="RandomNoise",
      outputs=[Output("NOISE", tooltip="Noise from the seed.")])
class RandomNoise:
    """Starting noise from a seed."""
    noise_seed = Int(0, min=0, max=SEED_MAX, control_after_generate=True, tooltip="The random seed.")

    def run(self, ctx, noise_seed):
        return (RandomNoiseSource(noise_seed),)


@node(category="sampling/custom_sampling/noise", display_name="DisableNoise",
      outputs=[Output("NOISE", tooltip="No noise (the latent is used as it is).")])
class DisableNoise:
    """No starting noise: continue from latents that already hold noise."""

    def run(self, ctx):
        return (NoNoise(),)


@node(category="sampling/custom_sampling/guiders", display_name="CFGGuider",
      outputs=[Output("GUIDER", tooltip="Model, prompts and guidance scale.")])
class CFGGuider:
    """Classifier-free guidance with a positive and a negative prompt."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    positive = Socket("CONDITIONING", tooltip="What the image should show.")
    negative = Socket("CONDITIONING", tooltip="What the image should not show.")
    cfg = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Guidance scale.")

    def run(self, ctx, model, positive, negative, cfg):
        return (Guider(model, positive, negative, cfg),)


@node(category="sampling/custom_sampling/guiders", display_name="BasicGuider",
      outputs=[Output("GUIDER", tooltip="Model and prompt, no negative.")])
class BasicGuider:
    """Guidance by one conditioning only (for guidance-distilled models)."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    conditioning = Socket("CONDITIONING", tooltip="What the image should show.")

    def run(self, ctx, model, conditioning):
        return (Guider(model, conditioning, None, 1.0),)


@node(category="sampling/custom_sampling/guiders", display_name="DualCFGGuider",
      outputs=[Output("GUIDER", tooltip="Model, two prompts, a negative and two scales.")])
class DualCFGGuider:
    """Guidance by two prompts against a negative, each with its own scale."""
    model = Socket("MODEL", tooltip="The model that denoises.")
    cond1 = Socket("CONDITIONING", tooltip="The main prompt.")
    cond2 = Socket("CONDITIONING", tooltip="The second prompt.")
    negative = Socket("CONDITIONING", tooltip="What the image should not show.")
    cfg_conds = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01, tooltip="Scale of cond1 against cond2.")
    cfg_cond2_negative = Float(8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Scale of cond2 against the negative.")
    style = Combo(["regular", "nested"], tooltip="How the two guidance terms combine.")

    def run(self, ctx, model, cond1, cond2, negative, cfg_conds, cfg_cond2_negative, style):
        return (Guider(model, cond1, negative, cfg_conds, second=cond2, cfg2=cfg_cond2_negative, style=style),)


# Align Your Steps (Sabour et al. 2024): the published optimised 10-step noise levels per model type; other step
# counts interpolate them log-linearly.
AYS_NOISE_LEVELS = {
    "SD1": (14.6146412293, 6.4745760956, 3.8636745985, 2.6946151520, 1.8841921177, 1.3943805092, 0.9642583904,
            0.6523686016, 0.3977456272, 0.1515232662, 0.0291671582),
    "SDXL": (14.6146412293, 6.3184485287, 3.7681790315, 2.1811480769, 1.3405244945, 0.8620721141, 0.5550693289,
             0.3798540708, 0.2332364134, 0.1114188177, 0.0291671582),
    "SVD": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}


def loglinear_resample(levels, count: int) -> torch.Tensor:
    """`count` decreasing values spread evenly over the log of a decreasing sequence (linear in log space)."""
    logs = torch.tensor(levels, dtype=torch.float64).log()
    position = torch.linspace(0, len(levels) - 1, count, dtype=torch.float64)
    low = position.floor().long().clamp(max=len(levels) - 2)
    frac = position - low
    return (logs[low] * (1 - frac) + logs[low + 1] * frac).exp()


@node(category="sampling/custom_sampling/schedulers", display_name="AlignYourStepsScheduler",
      outputs=[Output("SIGMAS", tooltip="The noise levels, from high to 0.")])
class AlignYourStepsScheduler:
    """The Align Your Steps schedule for SD1, SDXL or SVD models (good images in few steps)."""
    model_type = Combo(list(AYS_NOISE_LEVELS), tooltip="Which model family the schedule was optimised for.")
    steps = Int(10, min=1, max=10000, tooltip="How many steps.")
    denoise = Float(1.0, min=0.0, max=1.0, step=0.01, tooltip="Below 1: only the last round(steps*denoise) steps.")

    def run(self, ctx, model_type, steps, denoise):
        kept = steps
        if denoise < 1.0:
            if denoise <= 0.0:
                return (torch.zeros(0),)
            kept = round(steps * denoise)
        levels = AYS_NOISE_LEVELS[model_type]
        sigmas = torch.tensor(levels, dtype=torch.float64) if steps + 1 == len(levels) else \
            loglinear_resample(levels, steps + 1)
        sigmas = sigmas[-(kept + 1):].float().clone()
        sigmas[-1] = 0.0
        return (sigmas,)


NODES = [SamplerCustom, SamplerCustomAdvanced, KSamplerSelect, BasicScheduler, KarrasScheduler,
         ExponentialScheduler, PolyexponentialScheduler, SDTurboScheduler, BetaSamplingScheduler, SplitSigmas,
         SplitSigmasDenoise, FlipSigmas, SetFirstSigma, ManualSigmas, RandomNoise, DisableNoise, CFGGuider, BasicGuider, DualCFGGuider,
         AlignYourStepsScheduler]
