"""The benchmark script keeps working (tiny sizes; the figures themselves live in bench/RESULTS.md)."""
import json
import subprocess
import sys


def test_engine_overhead_runs_and_reports_every_shape():
    result = subprocess.run([sys.executable, "bench/engine_overhead.py", "--sizes", "20", "60", "--repeats", "1",
                             "--json"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(r["shape"], r["nodes"]) for r in rows] == [("chain", 20), ("chain", 60), ("fan-in", 20),
                                                        ("fan-in", 60)]
    assert all(r["validate_us"] > 0 and r["first_run_us"] > 0 and r["cached_run_us"] > 0 for r in rows)
