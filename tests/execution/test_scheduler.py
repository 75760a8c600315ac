"""Scheduler semantics (docs/architecture.md §4.4): caching, lazy inputs, expansion, list mapping, blockers, async, errors."""
import threading
import time

from execution.context import JobControl
from execution.events import RecordingSink
from tests.conftest import Engine


def chain_prompt(start=1, add=2):
    return {
        "1": {"class_type": "PrimitiveInt", "inputs": {"value": start}},
        "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": add, "operation": "add"}},
        "3": {"class_type": "IntMath", "inputs": {"a": ["2", 0], "b": 10, "operation": "multiply"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {"class_type": "PrimitiveInt", "inputs": {"value": 100}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }


def test_first_run_executes_in_dependency_order(engine):
    outcome, sink = engine.run(chain_prompt())
    assert outcome.status == "success"
    assert outcome.outputs == {"4": {"text": ["30"]}, "6": {"text": ["100"]}}
    order = outcome.executed
    assert order.index("1") < order.index("2") < order.index("3") < order.index("4")
    assert sorted(order) == ["1", "2", "3", "4", "5", "6"]
    assert order.index("4") < order.index("6")  # outputs complete in prompt order, each chain depth-first
    names = sink.names()
    assert names[0] == "execution_start" and names[1] == "execution_cached" and names[-1] == "execution_success"
    executing = [d["node"] for d in sink.of("executing")]
    assert executing == order


def test_identical_rerun_executes_nothing_but_reports_cached_outputs(engine):
    engine.run(chain_prompt())
    outcome, sink = engine.run(chain_prompt())
    assert outcome.executed == []
    assert sink.of("executing") == []
    assert sorted(sink.of("execution_cached")[0]["nodes"]) == ["1", "2", "3", "4", "5", "6"]
    # executed is sent for cached output nodes too, and the history outputs are complete
    assert sorted(d["node"] for d in sink.of("executed")) == ["4", "6"]
    assert outcome.outputs == {"4": {"text": ["30"]}, "6": {"text": ["100"]}}


def test_changing_one_literal_reruns_only_its_downstream(engine):
    engine.run(chain_prompt(add=2))
    outcome, _ = engine.run(chain_prompt(add=3))
    assert sorted(outcome.executed) == ["2", "3", "4"]
    assert outcome.outputs["4"] == {"text": ["40"]}


def test_identical_subgraphs_under_different_ids_run_once(engine):
    prompt = {
        "a1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
        "a2": {"class_type": "IntMath", "inputs": {"a": ["a1", 0], "b": 1, "operation": "add"}},
        "b1": {"class_type": "PrimitiveInt", "inputs": {"value": 7}},
        "b2": {"class_type": "IntMath", "inputs": {"a": ["b1", 0], "b": 1, "operation": "add"}},
        "sum": {"class_type": "IntMath", "inputs": {"a": ["a2", 0], "b": ["b2", 0], "operation": "add"}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["sum", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.outputs["out"] == {"text": ["16"]}
    ran = [d["node"] for d in sink.of("executing")]
    assert len([n for n in ran if n in ("a1", "b1")]) == 1
    assert len([n for n in ran if n in ("a2", "b2")]) == 1


def test_untaken_lazy_branch_never_runs(engine):
    for switch_class in ("V1LazySwitch", "V1AsyncLazySwitch"):
        engine = Engine()
        prompt = {
            "t": {"class_type": "V1Const", "inputs": {"value": 1}},
            "f": {"class_type": "V1Raise", "inputs": {"value": 2}},  # would fail the job if it ran
            "s": {"class_type": switch_class, "inputs": {"switch": True, "on_true": ["t", 0],
                                                         "on_false": ["f", 0]}},
            "out": {"class_type": "V1Collect", "inputs": {"value": ["s", 0]}},
        }
        outcome, sink = engine.run(prompt)
        assert outcome.status == "success", outcome.error
        assert outcome.outputs["out"] == {"values": [1]}
        assert "f" not in [d["node"] for d in sink.of("executing")]
        assert "f" not in outcome.executed


def test_native_lazy_inputs_take_the_other_branch(engine):
    prompt = {
        "a": {"class_type": "V1Raise", "inputs": {"value": 1}},
        "b": {"class_type": "PrimitiveString", "inputs": {"value": "bee"}},
        "p": {"class_type": "LazyPick", "inputs": {"first": False, "a": ["a", 0], "b": ["b", 0]}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["p", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success"
    assert outcome.outputs["out"] == {"text": ["bee"]}
    assert "a" not in outcome.executed


def test_loop_built_by_expansion_runs_four_iterations(engine):
    prompt = {
        "loop": {"class_type": "V1CountDown", "inputs": {"value": 10, "remaining": 4}},
        "out": {"class_type": "V1Collect", "inputs": {"value": ["loop", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success", outcome.error
    assert outcome.outputs["out"] == {"values": [14]}
    # the builder names the V1Add "<prefix>1" and the next V1CountDown "<prefix>2" in every iteration
    executed_adds = [n for n in outcome.executed if n.startswith("loop.") and n.endswith(".1")]
    assert len(executed_adds) == 4
    assert all(n.count(".") >= 3 for n in executed_adds)  # ephemeral ids are prefixed by their parent's
    # every event points at a node the user sees
    assert {d["display_node"] for d in sink.of("executing")} <= {"loop", "out"}


def test_expansion_that_creates_a_cycle_is_an_error_of_the_expanding_node(engine):
    prompt = {
        "x": {"class_type": "V1BadExpansion", "inputs": {"value": 1}},
        "out": {"class_type": "V1Collect", "inputs": {"value": ["x", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "error"
    error = sink.of("execution_error")[0]
    assert error["node_id"] == "x" and error["node_type"] == "V1BadExpansion"
    assert "cycle" in error["exception_message"]
    # the engine runs the next job normally
    ok, _ = engine.run(chain_prompt())
    assert ok.status == "success"


def test_list_mapping_with_unequal_lengths_repeats_the_last_item(engine):
    prompt = {
        "l3": {"class_type": "V1MakeList", "inputs": {"start": 0, "count": 3}},   # [0, 1, 2]
        "l2": {"class_type": "V1MakeList", "inputs": {"start": 10, "count": 2}},  # [10, 11]
        "add": {"class_type": "V1Add", "inputs": {"a": ["l3", 0], "b": ["l2", 0]}},
        "out": {"class_type": "V1Collect", "inputs": {"value": ["add", 0]}},
        "sum": {"class_type": "V1SumList", "inputs": {"values": ["add", 0]}},
        "out2": {"class_type": "V1Collect", "inputs": {"value": ["sum", 0]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.outputs["out"] == {"values": [10, 12, 13]}
    assert outcome.outputs["out2"] == {"values": [35]}


def test_execution_blocker_blocks_one_list_item(engine):
    prompt = {
        "l": {"class_type": "V1MakeList", "inputs": {"start": 0, "count": 4}},      # [0, 1, 2, 3]
        "gate": {"class_type": "V1BlockOdd", "inputs": {"value": ["l", 0], "message": ""}},
        "plus": {"class_type": "V1Add", "inputs": {"a": ["gate", 0], "b": 100}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["plus", 0]}},
        "all": {"class_type": "V1Collect", "inputs": {"value": ["plus", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "success"
    # the per-item output node runs for the unblocked items only
    assert outcome.outputs["out"] == {"text": ["100", "102"]}
    # a list-input node receiving a blocker anywhere in its list is blocked as a whole
    assert "all" not in outcome.outputs
    assert "execution_error" not in sink.names()


def test_blocker_with_a_message_reports_an_error_event_and_blocks(engine):
    prompt = {
        "c": {"class_type": "V1Const", "inputs": {"value": 3}},
        "gate": {"class_type": "V1BlockOdd", "inputs": {"value": ["c", 0], "message": "odd!"}},
        "plus": {"class_type": "V1Add", "inputs": {"a": ["gate", 0], "b": 1}},
        "out": {"class_type": "PreviewAny", "inputs": {"source": ["plus", 0]}},
    }
    outcome, sink = engine.run(prompt)
    errors = sink.of("execution_error")
    assert errors and errors[0]["exception_message"] == "Execution Blocked: odd!"
    assert errors[0]["node_id"] == "plus"
    assert "plus" not in outcome.outputs and "out" not in outcome.outputs


def test_three_async_sleeps_run_concurrently(engine):
    prompt = {f"s{i}": {"class_type": "V1Sleep", "inputs": {"value": i, "seconds": 1.0}} for i in range(3)}
    prompt["sum1"] = {"class_type": "V1Add", "inputs": {"a": ["s0", 0], "b": ["s1", 0]}}
    prompt["sum2"] = {"class_type": "V1Add", "inputs": {"a": ["sum1", 0], "b": ["s2", 0]}}
    prompt["out"] = {"class_type": "V1Collect", "inputs": {"value": ["sum2", 0]}}
    started = time.perf_counter()
    outcome, _ = engine.run(prompt)
    elapsed = time.perf_counter() - started
    assert outcome.outputs["out"] == {"values": [3]}
    assert elapsed < 2.0, elapsed


def test_native_async_nodes_run_concurrently(engine):
    prompt = {f"d{i}": {"class_type": "AsyncDelay", "inputs": {"value": i, "seconds": 0.5}} for i in range(4)}
    prompt.update({f"o{i}": {"class_type": "PreviewAny", "inputs": {"source": [f"d{i}", 0]}} for i in range(4)})
    started = time.perf_counter()
    outcome, _ = engine.run(prompt)
    assert time.perf_counter() - started < 1.5
    assert outcome.outputs["o3"] == {"text": ["3"]}


def test_node_error_reports_details_and_the_next_job_runs(engine):
    prompt = {
        "c": {"class_type": "V1Const", "inputs": {"value": 5}},
        "bad": {"class_type": "V1Raise", "inputs": {"value": ["c", 0]}},
        "out": {"class_type": "V1Collect", "inputs": {"value": ["bad", 0]}},
    }
    outcome, sink = engine.run(prompt)
    assert outcome.status == "error"
    error = sink.of("execution_error")[0]
    assert error["node_id"] == "bad" and error["node_type"] == "V1Raise"
    assert error["exception_type"] == "ValueError" and error["exception_message"] == "boom 5"
    assert any("boom" in line for line in error["traceback"])
    assert error["current_inputs"] == {"value": [5]}
    assert error["executed"] == ["c"]
    assert "execution_success" not in sink.names()
    assert outcome.messages[-1][0] == "execution_error"
    ok, _ = engine.run(chain_prompt())
    assert ok.status == "success"


def test_interrupt_stops_a_running_job():
    engine = Engine()
    control = JobControl()
    sink = RecordingSink()

    def interrupt_after_first_progress():
        deadline = time.time() + 10
        while time.time() < deadline and not sink.of("progress"):
            time.sleep(0.005)
        control.interrupt()

    watcher = threading.Thread(target=interrupt_after_first_progress)
    watcher.start()
    prompt = {"s": {"class_type": "SlowSteps", "inputs": {"steps": 1000, "delay": 0.01}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}}}
    started = time.perf_counter()
    outcome, _ = engine.run(prompt, control=control, sink=sink)
    watcher.join()
    assert outcome.status == "interrupted"
    assert time.perf_counter() - started < 5
    interrupted = sink.of("execution_interrupted")[0]
    assert interrupted["node_id"] == "s" and interrupted["node_type"] == "SlowSteps"
    assert len(sink.of("progress")) < 1000
    ok, _ = engine.run(chain_prompt())
    assert ok.status == "success"


def test_progress_events_carry_value_max_and_node(engine):
    prompt = {"s": {"class_type": "SlowSteps", "inputs": {"steps": 3, "delay": 0.0}},
              "out": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}}}
    _, sink = engine.run(prompt)
    assert [(p["value"], p["max"], p["node"]) for p in sink.of("progress")] == [(1, 3, "s"), (2, 3, "s"),
                                                                               (3, 3, "s")]
    states = sink.of("progress_state")
    assert states[-1]["nodes"]["out"]["state"] == "finished"
    assert any(s["nodes"].get("s", {}).get("value") == 2 and s["nodes"]["s"]["state"] == "running"
               for s in states)


def test_is_changed_fingerprint_controls_reruns():
    from tests.fixtures.v1_pack import V1Changing
    engine = Engine()
    prompt = {"c": {"class_type": "V1Changing", "inputs": {"value": 1}},
              "out": {"class_type": "V1Collect", "inputs": {"value": ["c", 0]}}}
    try:
        V1Changing.token = "a"
        assert sorted(engine.run(prompt)[0].executed) == ["c", "out"]
        assert engine.run(prompt)[0].executed == []
        V1Changing.token = "b"
        assert sorted(engine.run(prompt)[0].executed) == ["c", "out"]
        V1Changing.token = "raise"  # an exception means: always re-run
        assert "c" in engine.run(prompt)[0].executed
        assert "c" in engine.run(prompt)[0].executed
    finally:
        V1Changing.token = 0
    nan_prompt = {"c": {"class_type": "V1NaNChanged", "inputs": {"value": 1}},
                  "out": {"class_type": "V1Collect", "inputs": {"value": ["c", 0]}}}
    assert "c" in engine.run(nan_prompt)[0].executed
    assert "c" in engine.run(nan_prompt)[0].executed


def test_undeclared_linked_inputs_are_passed_as_kwargs(engine):
    prompt = {
        "a": {"class_type": "V1Const", "inputs": {"value": 2}},
        "b": {"class_type": "V1Const", "inputs": {"value": 40}},
        "k": {"class_type": "V1KwargsSum", "inputs": {"x": ["a", 0], "y": ["b", 0], "ignored_literal": 5}},
        "out": {"class_type": "V1Collect", "inputs": {"value": ["k", 0]}},
    }
    outcome, _ = engine.run(prompt)
    assert outcome.outputs["out"] == {"values": [42]}


def test_hidden_inputs_are_filled_by_the_engine(engine):
    prompt = {"w": {"class_type": "V1WhoAmI", "inputs": {}},
              "out": {"class_type": "V1Collect", "inputs": {"value": ["w", 0]}}}
    outcome, _ = engine.run(prompt, extra_data={"extra_pnginfo": {"workflow": 1}})
    assert outcome.outputs["out"] == {"values": ["w|['out', 'w']|{'workflow': 1}|V1WhoAmI"]}


def test_v1_instances_persist_per_node_id_across_runs(engine):
    prompt = {"n": {"class_type": "V1Counter", "inputs": {"value": 1}},
              "out": {"class_type": "V1Collect", "inputs": {"value": ["n", 0]}}}
    assert engine.run(prompt)[0].outputs["out"] == {"values": [1]}
    prompt["n"]["inputs"]["value"] = 2
    assert engine.run(prompt)[0].outputs["out"] == {"values": [2]}


def test_partial_execution_targets_run_only_the_selected_outputs(engine):
    outcome, _ = engine.run(chain_prompt(), targets=["6"])
    assert sorted(outcome.executed) == ["5", "6"]
    assert list(outcome.outputs) == ["6"]


def test_every_message_carries_the_prompt_id(engine):
    _, sink = engine.run(chain_prompt())
    ids = {data["prompt_id"] for _, data in sink.events}
    assert len(ids) == 1


def test_return_forms_blocker_raw_links_and_previews():
    """A whole-node ExecutionBlocker return, a rawLink input, a wrong-arity return, and ctx previews."""
    from execution.blocker import ExecutionBlocker
    from nodes.declare import Int, Output, Socket, node
    from nodes.v1_adapter import compile_v1

    class WholeBlock:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}}
        RETURN_TYPES = ("INT", "INT")
        FUNCTION = "run"

        def run(self, value):
            return ExecutionBlocker(None)

    class TooFew:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"value": ("INT",)}}
        RETURN_TYPES = ("INT", "INT")
        FUNCTION = "run"

        def run(self, value):
            return (value,)

    @node(category="tests", outputs=[Output("STRING")])
    class SeeLink:
        """Receives the link itself."""
        source = Socket("*", raw_link=True)
        size = Int(4)

        def run(self, ctx, source, size):
            ctx.send_preview(f"preview-{size}")
            return (f"{source[0]}:{source[1]}",)

    engine = Engine()
    engine.catalogue.add(compile_v1(WholeBlock, "WholeBlock"))
    engine.catalogue.add(compile_v1(TooFew, "TooFew"))
    engine.catalogue.add(SeeLink.SPEC)
    blocked = {"c": {"class_type": "V1Const", "inputs": {"value": 1}},
               "w": {"class_type": "WholeBlock", "inputs": {"value": ["c", 0]}},
               "out": {"class_type": "PreviewAny", "inputs": {"source": ["w", 1]}},
               "ok": {"class_type": "PreviewAny", "inputs": {"source": ["c", 0]}}}
    outcome, _ = engine.run(blocked)
    assert outcome.status == "success" and "out" not in outcome.outputs and outcome.outputs["ok"] == {"text": ["1"]}

    raw = {"r": {"class_type": "V1Raise", "inputs": {"value": 1}},
           "s": {"class_type": "SeeLink", "inputs": {"source": ["r", 0], "size": 3}},
           "out": {"class_type": "PreviewAny", "inputs": {"source": ["s", 0]}}}
    outcome, sink = engine.run(raw)
    assert outcome.status == "success" and outcome.outputs["out"] == {"text": ["r:0"]}
    assert "r" not in outcome.executed  # a raw link is not a dependency
    assert [p[1:3] for p in sink.previews] == [("s", "preview-3")]

    few = {"c": {"class_type": "V1Const", "inputs": {"value": 1}},
           "t": {"class_type": "TooFew", "inputs": {"value": ["c", 0]}},
           "out": {"class_type": "PreviewAny", "inputs": {"source": ["t", 0]}}}
    outcome, sink = engine.run(few)
    assert outcome.status == "error"
    assert "returned 1 value(s) but declares 2" in sink.of("execution_error")[0]["exception_message"]


def test_a_broken_sink_never_takes_the_job_down(engine):
    class Exploding(RecordingSink):
        def send(self, event, data):
            raise RuntimeError("socket closed")

    outcome, _ = engine.run(chain_prompt(), sink=Exploding())
    assert outcome.status == "success" and outcome.outputs["4"] == {"text": ["30"]}


def test_a_failing_event_sink_is_logged_and_the_job_still_completes(engine, caplog):
    class Flaky(RecordingSink):
        def send(self, event, data):
            if event == "executed":
                raise ConnectionResetError("client went away")
            super().send(event, data)

    with caplog.at_level("ERROR", logger="tessera.scheduler"):
        outcome, sink = engine.run(chain_prompt(), sink=Flaky())
    assert outcome.status == "success" and outcome.outputs["4"] == {"text": ["30"]}
    failures = [r for r in caplog.records if "event sink Flaky failed on 'executed'" in r.getMessage()]
    assert len(failures) == 2 and "client went away" in failures[0].exc_text
