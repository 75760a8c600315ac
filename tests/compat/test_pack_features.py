"""The V1 features fixture pack, written against the legacy module names, runs through the real validator and
scheduler: expansion, lazy inputs, progress (ProgressBar, ComfyAPISync, async ComfyAPI), ExecutionBlocker,
interrupts, folder listings, and calls into built-in nodes."""
import os

from execution.context import JobControl


def show(node_id):
    return {"class_type": "PreviewAny", "inputs": {"source": [node_id, 0]}}


def shown_text(outcome, node_id):
    return outcome.outputs[node_id]["text"][0]


def progress_of(sink, node_id):
    return [(e["value"], e["max"]) for e in sink.of("progress") if e["node"] == node_id]


def test_packs_load_and_broken_one_is_reported(pack_engine):
    results = pack_engine.results
    assert set(results) == {"broken_pack", "good_pack", "v1_features_pack", "v3_extension_pack"}
    broken = results["broken_pack"]
    assert not broken.ok and broken.node_names == []
    assert "Traceback" in broken.error and "broken_pack fails on purpose" in broken.error
    assert results["good_pack"].ok and results["v1_features_pack"].ok
    assert "FeatRepeatAdd" in pack_engine.catalogue and "GoodTriple" in pack_engine.catalogue


def test_expansion_through_graph_utils(pack_engine):
    outcome, _ = pack_engine.run({
        "1": {"class_type": "FeatRepeatAdd", "inputs": {"value": 5, "step": 2, "times": 3}}, "2": show("1")})
    assert outcome.status == "success", outcome.error
    assert shown_text(outcome, "2") == "11"
    expanded = [n for n in outcome.executed if n.startswith("1.")]
    assert len(expanded) == 3  # three ephemeral IntMath nodes, prefixed with the expanding node's id


def test_lazy_inputs_evaluate_only_what_is_asked(pack_engine):
    prompt = {
        "1": {"class_type": "IntMath", "inputs": {"a": 1, "b": 1, "operation": "add"}},
        "2": {"class_type": "FeatInterrupt", "inputs": {"value": 0, "mode": "raise"}},  # would end the job
        "3": {"class_type": "FeatLazySwitch", "inputs": {"switch": True, "on_true": ["1", 0], "on_false": ["2", 0]}},
        "4": show("3"),
        "5": {"class_type": "IntMath", "inputs": {"a": 3, "b": 4, "operation": "add"}},
        "6": {"class_type": "FeatLazyBoth", "inputs": {"a": ["1", 0], "b": ["5", 0]}},
        "7": show("6"),
    }
    outcome, _ = pack_engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert shown_text(outcome, "4") == "2"
    assert shown_text(outcome, "7") == "9"  # CheckLazyMixin asked for both lazy inputs
    assert "2" not in outcome.executed


def test_progress_bar_reports_progress_events(pack_engine):
    outcome, sink = pack_engine.run({
        "1": {"class_type": "FeatProgressBar", "inputs": {"steps": 4}}, "2": show("1")})
    assert outcome.status == "success", outcome.error
    assert progress_of(sink, "1") == [(1, 4), (2, 4), (3, 4), (4, 4)]
    states = [e["nodes"]["1"] for e in sink.of("progress_state") if "1" in e["nodes"]]
    assert any(s["value"] == 2 and s["max"] == 4 for s in states)


def test_comfy_api_progress_from_sync_and_async_nodes(pack_engine):
    outcome, sink = pack_engine.run({
        "1": {"class_type": "FeatApiSync", "inputs": {"steps": 3}}, "2": show("1"),
        "3": {"class_type": "FeatApiAsync", "inputs": {"steps": 3}}, "4": show("3"),
    })
    assert outcome.status == "success", outcome.error
    assert progress_of(sink, "1") == [(1, 3), (2, 3), (3, 3)]
    assert progress_of(sink, "3") == [(1, 3), (2, 3), (3, 3)]
    assert shown_text(outcome, "4") == "30"


def test_execution_blocker_stops_consumers(pack_engine):
    def prompt(block):
        return {"1": {"class_type": "FeatGate", "inputs": {"value": 7, "block": block}}, "2": show("1")}

    outcome, sink = pack_engine.run(prompt(True))
    assert outcome.status == "success", outcome.error
    assert "2" not in outcome.outputs and not [e for e in sink.of("executed") if e["node"] == "2"]
    outcome, _ = pack_engine.run(prompt(False))
    assert shown_text(outcome, "2") == "7"


def test_interrupt_processing_exception_interrupts_the_job(pack_engine):
    outcome, sink = pack_engine.run({
        "1": {"class_type": "FeatInterrupt", "inputs": {"value": 1, "mode": "raise"}}, "2": show("1")})
    assert outcome.status == "interrupted"
    assert sink.of("execution_interrupted") and not sink.of("execution_error")


def test_interrupt_current_processing_flags_only_this_job(pack_engine):
    control = JobControl()
    outcome, sink = pack_engine.run({
        "1": {"class_type": "FeatInterrupt", "inputs": {"value": 1, "mode": "flag"}}, "2": show("1")},
        control=control)
    assert outcome.status == "interrupted" and control.interrupted
    outcome, _ = pack_engine.run({  # the next job starts clear
        "1": {"class_type": "FeatInterrupt", "inputs": {"value": 1, "mode": "none"}}, "2": show("1")})
    assert outcome.status == "success"


def test_interrupted_job_stops_progress_bar(pack_engine):
    control = JobControl()
    control.interrupt()
    outcome, sink = pack_engine.run({
        "1": {"class_type": "FeatProgressBar", "inputs": {"steps": 4}}, "2": show("1")}, control=control)
    assert outcome.status == "interrupted"
    assert progress_of(sink, "1") == []


def test_folder_listing_combo_sees_new_files(pack_engine):
    prompt = {"1": {"class_type": "FeatModelInfo", "inputs": {"ckpt_name": "model.safetensors", "width": 640}},
              "2": show("1")}
    result = pack_engine.validate(prompt)
    assert not result.ok
    assert result.node_errors["1"]["errors"][0]["type"] == "value_not_in_list"
    target = os.path.join(pack_engine.services.paths.models_dir, "checkpoints", "model.safetensors")
    with open(target, "wb") as f:
        f.write(b"not really a model")
    outcome, _ = pack_engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert shown_text(outcome, "2") == f"{os.path.realpath(target)}@640"
    entry = pack_engine.catalogue.object_info(pack_engine.services, "FeatModelInfo")["FeatModelInfo"]
    assert entry["input"]["required"]["width"][1]["max"] == 16384


def test_pack_calls_and_subclasses_builtins(pack_engine):
    outcome, _ = pack_engine.run({
        "1": {"class_type": "FeatCallBuiltin", "inputs": {"a": 6, "b": 7}}, "2": show("1"),
        "3": {"class_type": "FeatSmallImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}},
        "4": show("3"),
    })
    assert outcome.status == "success", outcome.error
    assert set(outcome.outputs) == {"2", "4"}
    assert shown_text(outcome, "2") == "42"
    assert shown_text(outcome, "4").startswith("Tensor of shape [1, 4, 8, 3]")
    entry = pack_engine.catalogue.object_info(None, "FeatSmallImage")["FeatSmallImage"]
    assert entry["input"]["required"]["width"] == ["INT", {"default": 8, "min": 1, "max": 64}]
    assert entry["python_module"] == "custom_nodes.v1_features_pack"


def test_io_types_stay_widgets(pack_engine):
    """IO.INT inputs accept literals (they are plain "INT"), IO.ANY matches every linked type."""
    spec = pack_engine.catalogue.get("FeatRepeatAdd")
    assert all(i.is_widget for i in spec.current_inputs())
    result = pack_engine.validate({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "FeatLazySwitch", "inputs": {"switch": True, "on_true": ["1", 0], "on_false": ["1", 0]}},
        "3": show("2")})
    assert result.ok, result.node_errors


def test_comfy_sd_loads_models_packs_can_use(tiny_models, tmp_path):
    import comfy.sd
    import torch
    from safetensors.torch import save_file
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    save_file({"emb_params": torch.randn(1, 64)}, str(emb_dir / "tok.safetensors"))
    model, clip, vae, vision = comfy.sd.load_checkpoint_guess_config(
        tiny_models.checkpoint("sd1"), embedding_directory=str(emb_dir))
    assert vision is None and model.family.name == "sd1" and isinstance(vae, comfy.sd.VAE)
    cond, pooled, warnings = clip.encode("a embedding:tok")
    assert warnings == [] and cond.shape == (1, 77, 64)
