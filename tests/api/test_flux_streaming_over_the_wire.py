"""A Flux job through the real server started with a --ram-budget smaller than the transformer: the transformer
runs from its memory-mapped file (host streaming), the job succeeds with its image, and the log says what was
streamed."""
import os

from tests.nodes.test_flux_nodes import separate_files_prompt
from tests.server_harness import ServerProcess


def test_a_flux_job_under_a_small_ram_budget_streams_the_transformer(tmp_path, tiny_models):
    links = {"diffusion_models": [("flux1-dev.safetensors", tiny_models.flux("diffusion_model"))],
             "vae": [("ae.safetensors", tiny_models.flux("vae"))],
             "text_encoders": [("clip_l.safetensors", tiny_models.sd3("clip_l")),
                               ("t5xxl_fp16.safetensors", tiny_models.sd3("t5xxl"))]}
    for folder, names in links.items():
        os.makedirs(tmp_path / "models" / folder)
        for name, source in names:
            os.symlink(source, tmp_path / "models" / folder / name)
    budget_gb = os.path.getsize(tiny_models.flux("diffusion_model")) / 5 / (1 << 30)  # under its bf16 size too
    server = ServerProcess(tmp_path, packs=(), extra_args=["--ram-budget", f"{budget_gb:.6f}"]).start()
    try:
        prompt = separate_files_prompt(steps=2)
        status, body = server.post_prompt(prompt)
        assert status == 200, body
        history = server.wait_history(body["prompt_id"], timeout=120)
        assert history["status"]["status_str"] == "success", history["status"]
        assert history["outputs"]["save"]["images"]
        log = server.read_log()
        assert "does not fit the RAM budget" in log and "streaming" in log, log[-3000:]
    finally:
        server.stop()
