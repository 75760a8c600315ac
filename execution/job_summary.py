"""The job object of /api/jobs, in the field names and rules of ComfyUI's current jobs contract.

Statuses: pending, in_progress, completed, failed, cancelled (an interrupted job). Every job has `id`, `status`,
`priority` (its queue number), `create_time` (ms), `outputs_count` and `previewable_outputs_count`; finished ones
add `execution_start_time` / `execution_end_time` (ms), `completion_status`, `has_errors`,
`execution_error_count`, `execution_error` (the execution_error event's data) and `preview_output` (one output to
show: a saved image/video/audio/3D file first, then any other previewable one, then a saved text file, then raw
text); `workflow_id` when the editor's workflow carried one. Fields without a value are left out, as the contract
does. Tessera's own earlier names stay alongside (`number`, `created_at`, `outputs_to_execute`, `client_id`).

Counting: each output item that is a dict (a file) counts, and so does a string naming a 3D file; other strings
(text shown by a node) do not count, but raw text may still serve as the preview when nothing else does.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

PREVIEWABLE_MEDIA = frozenset({"images", "video", "audio", "3d", "text"})
THREE_D_EXTENSIONS = (".obj", ".fbx", ".gltf", ".glb", ".usdz")
TEXT_EXTENSIONS = (".txt", ".md", ".json")
TEXT_PREVIEW_LIMIT = 1024


def _as_item(item: Any) -> Optional[dict]:
    """An output item as a file dict, or None for one that is not a file (text)."""
    if isinstance(item, dict):
        return item
    if isinstance(item, str) and item.lower().endswith(THREE_D_EXTENSIONS):
        return {"filename": item, "type": "output", "subfolder": "", "mediaType": "3d"}
    return None


def _previewable(media: str, item: dict) -> bool:
    fmt = str(item.get("format") or "")
    name = str(item.get("filename") or "").lower()
    return (media in PREVIEWABLE_MEDIA or fmt.startswith(("video/", "audio/")) or name.endswith(THREE_D_EXTENSIONS)
            or name.endswith(TEXT_EXTENSIONS))


def _is_text(media: str, item: dict) -> bool:
    return media == "text" or str(item.get("filename") or "").lower().endswith(TEXT_EXTENSIONS)


def _media_lists(outputs: dict):
    """(node id, media kind, items) for every output list (the `animated` flag is not a list of items)."""
    for node_id, ui in (outputs or {}).items():
        if not isinstance(ui, dict):
            continue
        for media, items in ui.items():
            if media != "animated" and isinstance(items, list):
                yield node_id, media, items


def outputs_summary(outputs: dict) -> Tuple[int, int, Optional[dict]]:
    """(outputs_count, previewable_outputs_count, preview_output) of a job's outputs."""
    count = previewable = 0
    best: Dict[str, Optional[dict]] = {"saved": None, "other": None, "text_file": None, "text": None}
    for node_id, media, items in _media_lists(outputs):
        for raw in items:
            item = _as_item(raw)
            if item is None:
                if media == "text" and raw is not None and best["text"] is None:
                    value = raw[0] if isinstance(raw, (list, tuple)) and raw else str(raw)
                    value = str(value)
                    text = {"content": value[:TEXT_PREVIEW_LIMIT]}
                    if len(value) > TEXT_PREVIEW_LIMIT:
                        text["truncated"] = True
                    best["text"] = {**text, "nodeId": node_id, "mediaType": media}
                continue
            count += 1
            if not _previewable(media, item):
                continue
            previewable += 1
            shown = {**item, "nodeId": node_id}
            shown.setdefault("mediaType", media)
            slot = "text_file" if _is_text(media, item) else "saved" if item.get("type") == "output" else "other"
            if best[slot] is None:
                best[slot] = shown
    preview = best["saved"] or best["other"] or best["text_file"] or best["text"]
    return count, previewable, preview


def _events(messages: List[Any]) -> Dict[str, Any]:
    found: Dict[str, Any] = {"start": None, "end": None, "error": None, "success": None, "interrupted": False,
                             "node_errors": []}
    for entry in messages or []:
        if not isinstance(entry, (list, tuple)) or len(entry) < 2 or not isinstance(entry[1], dict):
            continue
        event, data = entry[0], entry[1]
        if event == "execution_start":
            found["start"] = data.get("timestamp")
        elif event in ("execution_success", "execution_error", "execution_interrupted"):
            found["end"] = data.get("timestamp")
            if event == "execution_success":
                found["success"] = data
            elif event == "execution_error":
                found["error"] = data
            else:
                found["interrupted"] = True
        elif event == "execution_node_error":
            found["node_errors"].append(data)
    return found


def _pruned(job: dict) -> dict:
    return {k: v for k, v in job.items() if v is not None}


def job_object(*, prompt_id: str, status: str, number: Any, created_ms: int, started_ms: Optional[int],
               finished_ms: Optional[int], outputs: dict, messages: List[Any], workflow_id: Optional[str] = None,
               create_time: Optional[int] = None, finished: bool) -> dict:
    """The contract's job object (see the module docstring); `status` is already a contract status name;
    `create_time` is the client's (extra_data.create_time) when it sent one, else the queue time."""
    create_time = created_ms if create_time is None else create_time
    if not finished:
        return _pruned({"id": prompt_id, "status": status, "priority": number, "create_time": create_time,
                        "outputs_count": 0, "previewable_outputs_count": 0, "workflow_id": workflow_id})
    count, previewable, preview = outputs_summary(outputs)
    events = _events(messages)
    completion = (events["success"] or {}).get("completion_status") or ("success" if status == "completed"
                                                                       else None)
    errors = events["node_errors"]
    return _pruned({
        "id": prompt_id, "status": status, "priority": number, "create_time": create_time,
        "execution_start_time": events["start"] if events["start"] is not None else started_ms,
        "execution_end_time": events["end"] if events["end"] is not None else finished_ms,
        "execution_error": events["error"], "completion_status": completion,
        "has_errors": bool(errors) or events["error"] is not None,
        "execution_error_count": len(errors) or int(events["error"] is not None),
        "outputs_count": count, "previewable_outputs_count": previewable, "preview_output": preview,
        "workflow_id": workflow_id,
    })
