"""The /api/jobs job object: ComfyUI's current contract (counts, preview choice, statuses, field names)."""
from execution.job_summary import job_object, outputs_summary


def test_counts_and_the_preview_priority():
    outputs = {
        "5": {"text": ["a caption"]},  # raw text: not counted, only a last-resort preview
        "6": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
        "7": {"images": [{"filename": "s.png", "subfolder": "", "type": "output"}], "animated": [False]},
        "8": {"latents": [{"filename": "x.latent", "subfolder": "", "type": "output"}]},
        "9": {"3d": ["mesh.glb"]},
    }
    count, previewable, preview = outputs_summary(outputs)
    assert count == 4  # two images, the latent file and the 3D file; text and the animated flag are not items
    assert previewable == 3  # a .latent does not render in the frontend
    assert preview == {"filename": "s.png", "subfolder": "", "type": "output", "nodeId": "7", "mediaType": "images"}
    assert outputs_summary({"6": outputs["6"]})[2]["nodeId"] == "6"  # a temp image when nothing is saved
    text_only = outputs_summary({"5": {"text": ["x" * 2000]}})
    assert text_only[:2] == (0, 0) and text_only[2]["truncated"] and len(text_only[2]["content"]) == 1024
    saved_text = {"4": {"text": [{"filename": "notes.txt", "subfolder": "", "type": "output"}]}, "6": outputs["6"]}
    assert outputs_summary(saved_text)[2]["filename"] == "p.png"  # text never outranks visual media
    assert outputs_summary({}) == (0, 0, None)


def test_job_objects_for_each_status():
    pending = job_object(prompt_id="a", status="pending", number=3, created_ms=1000, started_ms=None,
                         finished_ms=None, outputs={}, messages=[], workflow_id="wf-1", finished=False)
    assert pending == {"id": "a", "status": "pending", "priority": 3, "create_time": 1000, "outputs_count": 0,
                       "previewable_outputs_count": 0, "workflow_id": "wf-1"}
    messages = [["execution_start", {"prompt_id": "b", "timestamp": 1500}],
                ["execution_error", {"prompt_id": "b", "node_id": "2", "exception_message": "boom",
                                     "timestamp": 1900}]]
    failed = job_object(prompt_id="b", status="failed", number=4, created_ms=1000, started_ms=1400,
                        finished_ms=2000, outputs={}, messages=messages, finished=True)
    assert failed["execution_start_time"] == 1500 and failed["execution_end_time"] == 1900  # the events' times
    assert failed["execution_error"]["exception_message"] == "boom" and failed["has_errors"] is True
    assert failed["execution_error_count"] == 1 and "completion_status" not in failed and "workflow_id" not in failed
    done = job_object(prompt_id="c", status="completed", number=5, created_ms=1000, started_ms=1100,
                      finished_ms=1200, outputs={"1": {"images": [{"filename": "a.png", "type": "output"}]}},
                      messages=[], create_time=999, finished=True)
    assert done["completion_status"] == "success" and done["has_errors"] is False
    assert done["execution_start_time"] == 1100 and done["create_time"] == 999  # the client's create_time wins
    assert done["outputs_count"] == 1 and done["preview_output"]["nodeId"] == "1"
