"""Random-weight ControlNets in the real on-disk layouts, sized to fit the synthetic checkpoints.

Like diffusion/synthetic_checkpoints.py for whole models: tests cannot download ControlNets, so they write their own
with the released files' key names and shapes -- the single-file LDM layout (`control_model.*`, optionally bare)
or the diffusers ControlNetModel layout -- filled with seeded random weights (the zero convs too, so the residuals
are not zero). A "diff" ControlNet stores weights minus a base UNet's, with the `difference` marker key.

    python -m model_management.synthetic_controlnets sd1 out.safetensors [--diffusers] [--full] [--seed N]
"""
from __future__ import annotations

import argparse
import sys
from typing import Dict, Mapping, Optional

import torch

from diffusion.controlnet.model import CONTROL_PREFIX, ControlNet, controlnet_config_from_unet
from diffusion.synthetic_checkpoints import _unet_config
from model_management.control_files import DIFFERENCE_MARKER, ldm_to_diffusers

FAMILIES = ("sd1", "sd2", "sdxl")
LAYOUTS = ("ldm", "ldm_bare", "diffusers")


def make_controlnet_network(family: str, full: bool = False, seed: int = 0) -> ControlNet:
    """A random ControlNet whose encoder matches the (tiny or full) synthetic checkpoint UNet of `family`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown ControlNet family {family!r}; choose from {', '.join(FAMILIES)}")
    torch.manual_seed(seed)
    return ControlNet(controlnet_config_from_unet(_unet_config(family, full, False))).eval()


def make_controlnet(family: str = "sd1", layout: str = "ldm", full: bool = False, seed: int = 0,
                    difference_from: Optional[Mapping[str, torch.Tensor]] = None,
                    dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """A ControlNet state dict in `layout` ("ldm": `control_model.*` keys, "ldm_bare": no prefix, "diffusers").

    `difference_from`: a base UNet state dict (LDM keys, no prefix); shared keys are stored as differences from it
    and the `difference` marker is added (LDM layouts only, as released diff ControlNets are).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    state = {k: v.detach().clone() for k, v in make_controlnet_network(family, full, seed).state_dict().items()}
    if difference_from is not None:
        if layout == "diffusers":
            raise ValueError("diff ControlNets exist only in the LDM layout")
        state = {k: (v - difference_from[k].to(v)) if k in difference_from else v for k, v in state.items()}
    if layout == "diffusers":
        state = ldm_to_diffusers(state)
    elif layout == "ldm":
        state = {CONTROL_PREFIX + k: v for k, v in state.items()}
    state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    if difference_from is not None:
        state[DIFFERENCE_MARKER] = torch.tensor([])
    return state


def write_controlnet(path: str, family: str = "sd1", **kwargs) -> str:
    from safetensors.torch import save_file
    save_file(make_controlnet(family, **kwargs), path, metadata={"format": "pt", "tessera.synthetic": "controlnet"})
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=FAMILIES)
    parser.add_argument("output", help="the .safetensors file to write")
    parser.add_argument("--diffusers", action="store_true", help="diffusers ControlNetModel key layout")
    parser.add_argument("--full", action="store_true", help="real sizes instead of tiny ones")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_controlnet(args.output, args.family, layout="diffusers" if args.diffusers else "ldm", full=args.full,
                     seed=args.seed)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
