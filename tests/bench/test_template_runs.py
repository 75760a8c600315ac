"""Issue 16's acceptance walk: every official template of SD1.5, SDXL, SD3.x and Flux.1 in the installed
`comfyui-workflow-templates-json` package is converted, validated and run on tiny random models under the file
names it references (bench/template_runs.py); each one either runs or says why it cannot yet."""
import json
import subprocess
import sys

# the templates that must run today; the list only grows as families and nodes land
MUST_RUN = {"image_sdxl_simple", "sdxl_simple_example", "sdxl_refiner_prompt_example", "sdxlturbo_example",
            "sd3.5_simple_example", "flux1_krea_dev", "flux_dev_checkpoint_example", "flux_dev_full_text_to_image",
            "flux_fill_inpaint_example", "flux_fill_outpaint_example", "flux_schnell", "flux_schnell_full_text_to_image",
            "flux_canny_model_example", "image_flux.1_fill_dev_OneReward", "sdxl_revision_text_prompts",
            "sd3.5_large_blur", "sd3.5_large_canny_controlnet_example", "flux_redux_model_example"}


def test_templates_run_or_say_why_not():
    result = subprocess.run([sys.executable, "bench/template_runs.py", "--json"], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(result.stdout)
    by_family = {}
    for row in rows:
        by_family.setdefault(row["family"], []).append(row)
    assert set(by_family) == {"SD1.5", "SDXL", "SD3.x", "Flux.1"} and len(rows) >= 20
    ran = {r["template"] for r in rows if r["status"] == "ran"}
    assert MUST_RUN <= ran, sorted(MUST_RUN - ran)
    failed = [r for r in rows if r["status"] == "failed"]
    assert not failed, failed  # a template that gets as far as running must not break
    assert all(r["reason"] for r in rows if r["status"] == "blocked")
    print(f"{len(ran)} of {len(rows)} templates ran: " + ", ".join(sorted(ran)))
