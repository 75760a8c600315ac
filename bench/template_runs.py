"""Issue 16: run ComfyUI's official workflow templates of SD1.5, SDXL, SD3.x and Flux.1 on tiny random models.

For every template of the installed `comfyui-workflow-templates-json` package that belongs to one of those
families (the package index's `models`) and needs no partner-API node, this writes tiny random-weight files under
the exact names the template's loader nodes reference (checkpoints, diffusion models, text encoders, VAEs,
ControlNets, input images), shrinks the work (64-pixel latents, 4 steps), converts the UI workflow to an API prompt
with the engine's converter, validates it and runs it. Each template ends as `ran` or with the reason it did not:
a node Tessera lacks, a model family it does not run yet, or a file kind the tiny generators cannot make.

    python bench/template_runs.py [--family SD3.x] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import uuid
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.template_census import FAMILIES, FRONTEND_ONLY, _family, _index, _node_types  # noqa: E402

LATENT_NODES = ("EmptyLatentImage", "EmptySD3LatentImage")
STEPS = 4
NOT_FLUX1_NAMES = ("flux2", "flux3", "kontext", "chroma")
STEP_INPUTS = {"KSampler": "steps", "KSamplerAdvanced": "steps", "BasicScheduler": "steps"}
# loader node -> (its file inputs, the model folder they name)
LOADERS = {"CheckpointLoaderSimple": (("ckpt_name",), "checkpoints"),
           "UNETLoader": (("unet_name",), "diffusion_models"),
           "CLIPLoader": (("clip_name",), "text_encoders"),
           "DualCLIPLoader": (("clip_name1", "clip_name2"), "text_encoders"),
           "TripleCLIPLoader": (("clip_name1", "clip_name2", "clip_name3"), "text_encoders"),
           "VAELoader": (("vae_name",), "vae"),
           "ControlNetLoader": (("control_net_name",), "controlnet"),
           "CLIPVisionLoader": (("clip_name",), "clip_vision"), "StyleModelLoader": (("style_model_name",), "style_models"),
           "LoraLoader": (("lora_name",), "loras"), "LoraLoaderModelOnly": (("lora_name",), "loras"),
           "UpscaleModelLoader": (("model_name",), "upscale_models")}


class Unavailable(Exception):
    """A file the tiny generators cannot make (the reason is the message)."""


def templates(families: Optional[List[str]] = None) -> List[Tuple[str, str, dict]]:
    """(name, family, workflow) of the local templates of the issue's families, by name."""
    import comfyui_workflow_templates_json as package
    root = os.path.join(os.path.dirname(package.__file__), "templates")
    index = _index(root)
    out = []
    for name, (open_source, models) in sorted(index.items()):
        family = _family(models)
        if family == "Flux.1" and any(mark in name.lower() for mark in NOT_FLUX1_NAMES):
            family = "other"  # indexed as plain "FLUX" but another model (Flux.2, Kontext, Chroma)
        if family == "other" or open_source is False or name.startswith("api_"):
            continue
        if families and family not in families:
            continue
        path = os.path.join(root, name + ".json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                out.append((name, family, json.load(handle)))
    return out


def file_family(name: str, default: str) -> str:
    """The model family a referenced file belongs to, from its name (the template's family otherwise)."""
    lower = name.lower()
    if "flux" in lower or lower in ("ae.safetensors",):
        return "flux"
    if lower.startswith(("clip_l", "clip_g", "t5")) and default in ("SD3.x", "Flux.1"):
        return "sd3" if default == "SD3.x" else "flux"
    if "sd3" in lower:
        return "sd3"
    if "refiner" in lower:
        return "sdxl_refiner"
    if "xl" in lower:
        return "sdxl"
    if "lotus" in lower:
        return "lotus"
    if lower.startswith(("v1-5", "vae-ft-mse", "sd15", "sd-v1")):
        return "sd1"
    return {"SD1.5": "sd1", "SDXL": "sdxl", "SD3.x": "sd3", "Flux.1": "flux"}[default]


def text_role(name: str) -> str:
    lower = name.lower()
    if "t5" in lower:
        return "t5xxl"
    return "clip_g" if "clip_g" in lower else "clip_l"


def tiny_state(folder: str, name: str, family: str) -> Dict:
    """A tiny random-weight state dict for the file `name` of `folder`, or Unavailable."""
    if family == "lotus":
        raise Unavailable("Lotus depth (an SD2-based UNet with its own conditioning) has no tiny generator")
    if family == "flux":
        from diffusion.synthetic_flux import make_flux_checkpoint
        dev = "schnell" not in name.lower()
        extra = 80 if "fill" in name.lower() else (16 if ("canny" in name.lower() or "depth" in name.lower()) else 0)
        if folder == "checkpoints":
            return make_flux_checkpoint(dev=dev, extra_channels=extra)
        if folder in ("diffusion_models", "vae"):
            prefix = "model.diffusion_model." if folder == "diffusion_models" else "vae."
            return {k[len(prefix):]: v for k, v in make_flux_checkpoint(dev=dev, text=(), extra_channels=extra).items()
                    if k.startswith(prefix)}
    if folder == "text_encoders" and family in ("sd3", "flux"):
        from diffusion.synthetic_sd3 import text_encoder_file_state
        return text_encoder_file_state(text_role(name))
    if folder == "loras" and family in ("sd1", "sdxl", "sd3", "flux"):
        return tiny_lora(family)
    if folder == "checkpoints":
        if family == "sd3":
            from diffusion.synthetic_sd3 import make_sd3_checkpoint
            return make_sd3_checkpoint()
        from diffusion.synthetic_checkpoints import make_checkpoint
        return make_checkpoint(family)
    if folder == "diffusion_models" and family == "sd3":
        from diffusion.synthetic_sd3 import make_sd3_checkpoint
        prefix = "model.diffusion_model."
        return {k[len(prefix):]: v for k, v in make_sd3_checkpoint(text=()).items() if k.startswith(prefix)}
    if folder == "vae":
        if family == "sd3":
            from diffusion.synthetic_sd3 import make_sd3_checkpoint
            source = make_sd3_checkpoint(text=())
        else:
            from diffusion.synthetic_checkpoints import make_checkpoint
            source = make_checkpoint(family)
        prefix = "first_stage_model."
        return {k[len(prefix):]: v for k, v in source.items() if k.startswith(prefix)}
    if folder == "clip_vision" and "sigclip" in name.lower():
        from diffusion.synthetic_clip_vision import make_siglip_vision
        return make_siglip_vision()
    if folder == "style_models" and "redux" in name.lower():
        from diffusion.synthetic_clip_vision import make_redux
        return make_redux()
    if folder == "clip_vision" and family == "sdxl":
        from diffusion.synthetic_clip_vision import make_clip_vision
        from diffusion.unet import tiny_sdxl_config
        return make_clip_vision(tiny_sdxl_config().adm_in_channels - 6 * 256)  # the tiny SDXL's pooled width
    if folder == "controlnet" and family == "sd3":
        from diffusion.synthetic_sd3 import make_sd35_controlnet
        kind = next((k for k in ("canny", "depth", "blur") if k in name.lower()), "blur")
        return make_sd35_controlnet(kind)
    if folder == "controlnet" and family in ("sd1", "sdxl"):
        from model_management.synthetic_controlnets import make_controlnet
        return make_controlnet(family)
    raise Unavailable(f"no tiny generator for a {family} file in models/{folder} ({name})")


def tiny_lora(family: str) -> Dict:
    """A kohya-named LoRA (rank 2) on the first two linear layers inside the blocks of the family's tiny diffusion
    model (so it fits the family's Fill / inpainting variants too)."""
    import torch
    if family == "flux":
        from diffusion.synthetic_flux import make_flux_checkpoint
        source = make_flux_checkpoint(text=())
    elif family == "sd3":
        from diffusion.synthetic_sd3 import make_sd3_checkpoint
        source = make_sd3_checkpoint(text=())
    else:
        from diffusion.synthetic_checkpoints import make_checkpoint
        source = make_checkpoint(family)
    prefix = "model.diffusion_model."
    linears = [(k[len(prefix):-len(".weight")], v) for k, v in source.items()  # inside blocks: the same in
               if k.startswith(prefix) and k.endswith(".weight") and v.ndim == 2 and "blocks." in k][:2]  # variants
    state = {}
    for module, weight in linears:
        name = "lora_unet_" + module.replace(".", "_")
        state[name + ".lora_up.weight"] = torch.randn(weight.shape[0], 2) * 0.01
        state[name + ".lora_down.weight"] = torch.randn(2, weight.shape[1]) * 0.01
        state[name + ".alpha"] = torch.tensor(2.0)
    return state


def shrink(prompt: dict) -> None:
    """64-pixel latents and images, STEPS sampling steps, one image a batch."""
    for node in prompt.values():
        kind, inputs = node.get("class_type"), node.get("inputs", {})
        if kind in LATENT_NODES:
            inputs.update(width=64, height=64, batch_size=1)
        elif kind in STEP_INPUTS and isinstance(inputs.get(STEP_INPUTS[kind]), int):
            old = max(1, inputs[STEP_INPUTS[kind]])
            inputs[STEP_INPUTS[kind]] = STEPS
            for key in ("start_at_step", "end_at_step"):  # a base + refiner split keeps its proportion
                if isinstance(inputs.get(key), int) and inputs[key] < old:
                    inputs[key] = round(inputs[key] * STEPS / old)
        elif kind in ("ImageScale",) and isinstance(inputs.get("width"), int):
            inputs.update(width=64, height=64)
        elif kind == "ImageScaleToTotalPixels":
            inputs["megapixels"] = 0.004


def referenced_files(prompt: dict) -> List[Tuple[str, str]]:
    files = []
    for node in prompt.values():
        spec = LOADERS.get(node.get("class_type"))
        if spec is None:
            continue
        keys, folder = spec
        for key in keys:
            value = node.get("inputs", {}).get(key)
            if isinstance(value, str):
                files.append((folder, value))
    return files


def input_images(prompt: dict) -> List[str]:
    return [n["inputs"]["image"] for n in prompt.values()
            if n.get("class_type") == "LoadImage" and isinstance(n.get("inputs", {}).get("image"), str)]


def run_template(name: str, family: str, workflow: dict, catalogue, base: str) -> Tuple[str, str]:
    """("ran", "") or ("failed" | "blocked", why)."""
    from safetensors.torch import save_file

    from execution.events import RecordingSink
    from execution.scheduler import Executor, Job
    from graph.ui_format import ui_to_api
    from graph.validation import validate_prompt
    from model_management.services import Services
    missing = sorted(_node_types(workflow) - set(catalogue.names()) - FRONTEND_ONLY)
    if missing:
        return "blocked", "missing nodes: " + ", ".join(missing)
    folder = os.path.join(base, name)
    services = Services.for_directory(folder)
    try:
        prompt = ui_to_api(workflow, catalogue)
    except Exception as exc:  # noqa: BLE001 -- reported per template
        return "failed", f"UI -> API conversion: {exc}"
    for kind, filename in referenced_files(prompt):
        target = os.path.join(services.paths.folder_paths(kind)[0], filename)
        if os.path.exists(target):
            continue
        try:
            state = tiny_state(kind, filename, file_family(filename, family))
        except Unavailable as exc:
            return "blocked", str(exc)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, target)
    from PIL import Image
    for image in input_images(prompt):
        path = os.path.join(services.paths.input_dir, image)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.new("RGB", (64, 64), (180, 120, 60)).save(path)
    shrink(prompt)
    checked = validate_prompt(prompt, catalogue, None, services)
    if not checked.ok:
        details = "; ".join(f"{nid}: {e.get('message', e)}" for nid, errs in
                            (checked.node_errors or {}).items() for e in errs.get("errors", [])) if \
            isinstance(checked.node_errors, dict) else str(checked.node_errors)
        return "failed", f"validation: {checked.error.get('message') if checked.error else ''} {details}".strip()
    executor = Executor(catalogue, services=services)
    outcome = executor.execute_sync(Job(str(uuid.uuid4()), checked.prompt, checked.outputs, {}, checked.order),
                                    RecordingSink())
    if outcome.status != "success":
        error = outcome.error or {}
        return "failed", f"{error.get('node_type', '')}: {error.get('exception_message', error)}"[:300]
    return "ran", ""


def run_all(families: Optional[List[str]] = None) -> List[dict]:
    from compat.core_v3_nodes import add_core_v3_nodes
    from model_management.services import Services
    from nodes import builtin_catalogue
    catalogue = builtin_catalogue()
    rows = []
    with tempfile.TemporaryDirectory() as base:
        add_core_v3_nodes(catalogue, Services.for_directory(os.path.join(base, "_core")))  # as the server does
        for name, family, workflow in templates(families):
            status, why = run_template(name, family, workflow, catalogue, base)
            rows.append({"template": name, "family": family, "status": status, "reason": why})
    return rows


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="only these families")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = run_all(args.family)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    ran = [r for r in rows if r["status"] == "ran"]
    print(f"{len(ran)} of {len(rows)} templates of {', '.join(args.family or sorted(FAMILIES))} ran on tiny models")
    for row in rows:
        print(f"  {row['family']:7s} {row['template']:45s} {row['status']:8s} {row['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
