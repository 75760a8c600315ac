"""No leak across runs: 30 alternating runs of two workflows (different checkpoints and LoRAs) in a fresh process;
the RSS after run 30 is within 5 % of the RSS after run 2."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("device", ["cpu", "simulated-gpu"])
def test_thirty_alternating_runs_do_not_grow_memory(tmp_path, device):
    # simulated-gpu: a 16 MB "GPU" holds part of a tiny model, so every run also copies, evicts and streams layers
    extra = ["--simulate-vram-mb", "16"] if device == "simulated-gpu" else []
    result = subprocess.run([sys.executable, "-m", "tests.model_management.leak_workload", str(tmp_path), "30"]
                            + extra, cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rss = report["rss"]
    assert len(rss) == 30
    # the budget holds one checkpoint: every run evicted the other and read its file again
    assert report["file_reads"] == 30 and report["resident"] == 1
    growth = rss[29] / rss[1]
    assert growth <= 1.05, f"RSS grew {100 * (growth - 1):.1f}% from run 2 to run 30: {[r >> 20 for r in rss]} MiB"
