"""Progress and preview reporting shared by comfy.utils.ProgressBar and comfy_api's set_progress.

Both legacy APIs report "for the running node", which here means the NodeContext the scheduler set for the call
(execution.context.current_context). Outside node execution there is nowhere to report to, so they do nothing.
"""
from __future__ import annotations

from typing import Any, Optional

from execution.context import NodeContext, current_context


def context_for(node_id: Optional[Any] = None, fallback: Optional[NodeContext] = None) -> Optional[NodeContext]:
    """The context to report through: the current one (or `fallback`, captured earlier, for work handed to a plain
    thread where context variables do not follow); retargeted when `node_id` names another node of the same job."""
    ctx = current_context() or fallback
    if ctx is None or node_id is None or str(node_id) == ctx.node_id:
        return ctx
    graph = getattr(ctx.job, "graph", None)
    node_id = str(node_id)
    if graph is None or not graph.has_node(node_id):
        return ctx  # unknown id: report on the running node rather than invent one
    return NodeContext(ctx.job, node_id, graph.get_display_node_id(node_id), graph.get_node(node_id)["class_type"])


def report(value: float, total: Optional[float], node_id: Optional[Any] = None, preview: Any = None,
           fallback: Optional[NodeContext] = None) -> None:
    """Send progress (and a preview) for the running node; raises Interrupted when the job was interrupted."""
    ctx = context_for(node_id, fallback)
    if ctx is None:
        return
    ctx.progress(value, total)
    if preview is not None:
        image, image_format, max_size = to_preview(preview)
        if image is not None:
            ctx.send_preview(image, image_format, max_size)


def to_preview(preview: Any) -> tuple:
    """(PIL image, format, max size) from what packs pass: a PIL image, ComfyUI's (format, image, max_size) tuple,
    or an IMAGE tensor ([B,H,W,C] or [H,W,C], 0..1; the first image of a batch)."""
    image_format, max_size = "JPEG", None
    if isinstance(preview, (tuple, list)) and len(preview) >= 2:
        image_format = str(preview[0] or "JPEG")
        max_size = preview[2] if len(preview) > 2 else None
        preview = preview[1]
    return to_pil(preview), image_format, max_size


def to_pil(image: Any) -> Any:
    from PIL import Image

    if image is None or isinstance(image, Image.Image):
        return image
    try:
        import numpy as np
        import torch
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    if isinstance(image, torch.Tensor):
        tensor = image.detach().float().cpu()
        if tensor.ndim == 4:
            tensor = tensor[0]
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(-1)
        if tensor.ndim != 3:
            return None
        array = (tensor.clamp(0, 1).numpy() * 255.0).astype(np.uint8)
        channels = array.shape[-1]
        if channels == 3 or channels >= 4:
            return Image.fromarray(array[..., :4] if channels >= 4 else array)
        return Image.fromarray(array[..., 0], "L")  # one channel (or two: show the first)
    return None
