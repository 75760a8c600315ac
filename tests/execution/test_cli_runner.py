"""The headless runner, as a user calls it: `python server.py --run WORKFLOW.json`."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
UI_FIXTURE = os.path.join(ROOT, "tests", "graph", "fixtures", "ui_v04_int_math.json")

API = {"1": {"class_type": "PrimitiveInt", "inputs": {"value": 5}},
       "2": {"class_type": "IntMath", "inputs": {"a": ["1", 0], "b": 3, "operation": "multiply"}},
       "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}}}


def run_cli(tmp_path, workflow, *extra):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow) if not isinstance(workflow, str) else workflow)
    return subprocess.run([sys.executable, "server.py", "--run", str(path), "--base-directory", str(tmp_path),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_api_workflow_runs_and_prints_outputs(tmp_path):
    result = run_cli(tmp_path, API)
    assert result.returncode == 0, result.stderr
    assert "#3: 15" in result.stdout
    assert "#2 IntMath" in result.stderr and "done in" in result.stderr


def test_set_overrides_inputs_with_json_values(tmp_path):
    result = run_cli(tmp_path, API, "--set", "1.value=7", "--set", '2.operation="add"')
    assert result.returncode == 0, result.stderr
    assert "#3: 10" in result.stdout


def test_ui_workflow_runs(tmp_path):
    with open(UI_FIXTURE) as f:
        workflow = json.load(f)
    result = run_cli(tmp_path, workflow)
    assert result.returncode == 0, result.stderr
    assert "#3:" in result.stdout


def test_progress_bar_for_nodes_that_report_progress(tmp_path):
    pack_dir = tmp_path / "custom_nodes"
    pack_dir.mkdir()
    (pack_dir / "steps.py").write_text(
        "import comfy.utils\n"
        "class Steps:\n"
        "    @classmethod\n"
        "    def INPUT_TYPES(cls):\n"
        "        return {'required': {'n': ('INT', {'default': 4})}}\n"
        "    RETURN_TYPES = ('INT',)\n"
        "    FUNCTION = 'go'\n"
        "    def go(self, n):\n"
        "        bar = comfy.utils.ProgressBar(n)\n"
        "        for _ in range(n):\n"
        "            bar.update(1)\n"
        "        return (n,)\n"
        "NODE_CLASS_MAPPINGS = {'Steps': Steps}\n")
    wf = {"1": {"class_type": "Steps", "inputs": {"n": 4}},
          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = run_cli(tmp_path, wf)  # stderr is a pipe here, not a terminal: a plain line per step
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stderr.splitlines() if line.startswith("#1 Steps step ")]
    assert [line.split()[3] for line in steps] == ["1/4", "2/4", "3/4", "4/4"], result.stderr
    assert all("s/step" in line for line in steps)


def test_progress_bar_on_a_terminal():
    import io
    from execution.cli_runner import TerminalProgress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = TerminalProgress({"1": {"class_type": "KSampler"}}, out, width=10)
    bar.send("executing", {"node": "1"})
    for step in (1, 2):
        bar.send("progress", {"node": "1", "value": step, "max": 2})
    bar.close()
    assert out.getvalue() == "#1 KSampler\r#1 KSampler [#####.....] 1/2\r#1 KSampler [##########] 2/2\n"


def test_failures_exit_non_zero_with_the_reason(tmp_path):
    bad = json.loads(json.dumps(API))
    bad["2"]["inputs"]["operation"] = "divide"
    bad["2"]["inputs"]["b"] = 0
    result = run_cli(tmp_path, bad)
    assert result.returncode == 1 and "division by zero" in result.stderr and "#2" in result.stderr
    invalid = run_cli(tmp_path, API, "--set", "1.value=notanumber")
    assert invalid.returncode == 1 and "node #1 (PrimitiveInt) input 'value'" in invalid.stderr
    assert run_cli(tmp_path, "{oops").returncode == 1
    missing = run_cli(tmp_path, API, "--set", "99.value=1")
    assert missing.returncode == 1 and "no node '99'" in missing.stderr
    malformed = run_cli(tmp_path, API, "--set", "novalue")
    assert malformed.returncode == 1 and "NODE.INPUT=VALUE" in malformed.stderr


def test_output_directory_flag_and_saved_files_are_printed(tmp_path):
    wf = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 255}},
          "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "cli/test"}}}
    out_dir = tmp_path / "elsewhere"
    result = run_cli(tmp_path, wf, "--output-directory", str(out_dir))
    assert result.returncode == 0, result.stderr
    printed = [line for line in result.stdout.splitlines() if line.endswith(".png")]
    assert len(printed) == 2 and all(os.path.isfile(p) and p.startswith(str(out_dir)) for p in printed)


def test_packs_that_register_routes_load_headless_too(tmp_path):
    import shutil
    shutil.copytree(os.path.join(ROOT, "tests", "fixtures", "server_pack"), tmp_path / "custom_nodes" / "server_pack")
    wf = {"1": {"class_type": "SlowCount", "inputs": {"steps": 3, "delay": 0.0, "previews": False}},
          "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}
    result = run_cli(tmp_path, wf)
    assert result.returncode == 0, result.stderr
    assert "#2: 3" in result.stdout and "#1 SlowCount step 3/3" in result.stderr
