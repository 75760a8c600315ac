"""ComfyUI's VAE interface on our VAE object (VAEModel), for node packs.

`vae.encode(pixels)` / `vae.decode(samples)` already take and give what ComfyUI's do (IMAGE [B, H, W, C] in 0..1,
raw latents). This adds the rest packs read: `first_stage_model` (the network), `patcher` / `load_device`, dtypes,
the compression ratios, `vae_encode_crop_pixels`, `process_input` / `process_output`, memory estimates, and the
keyword forms of `decode_tiled(samples, tile_x, tile_y, overlap)` / `encode_tiled(pixels, tile_x, tile_y, overlap)`
(square tiles, in latent cells for decoding and pixels for encoding, as there).
"""
from __future__ import annotations

from typing import Any, Optional

import torch

from model_management.device_face import DeviceFace

# Working memory in bytes at float32 of the SD VAE (the layout SD1, SD2 and SDXL share), per latent cell of a
# decode and per pixel of an encode, measured by bench/vae_memory.py (bench/RESULTS.md, "VAE working memory").
DECODE_BYTES_PER_CELL = 200_000
ENCODE_BYTES_PER_PIXEL = 2_050


def _square(tile_x: Optional[int], tile_y: Optional[int], default: int) -> int:
    tiles = {t for t in (tile_x, tile_y) if t is not None}
    if len(tiles) > 1:
        raise ValueError(f"tiled VAE passes use square tiles here; got tile_x={tile_x}, tile_y={tile_y}")
    return tiles.pop() if tiles else default


class VAEFace(DeviceFace):
    """Mixin for VAEModel (needs `vae`, `device`, `dtype`, `downscale`, `make_resident` and the tiled passes as
    `_decode_tiled(latent, tile, overlap, ...)` / `_encode_tiled(image, tile, overlap, ...)`)."""

    latent_channels = 4
    disable_offload = False
    downscale_index_formula = None
    upscale_index_formula = None

    @property
    def first_stage_model(self) -> torch.nn.Module:
        return self.vae

    @property
    def output_device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.dtype

    @property
    def downscale_ratio(self) -> int:
        return self.downscale

    @property
    def upscale_ratio(self) -> int:
        return self.downscale

    def spacial_compression_encode(self) -> int:
        return self.downscale

    def spacial_compression_decode(self) -> int:
        return self.downscale

    def throw_exception_if_invalid(self) -> None:
        """A VAE object here always holds a loaded network (bad files fail when loading)."""

    def process_input(self, image: torch.Tensor) -> torch.Tensor:
        """Pixels in 0..1 -> the VAE's -1..1."""
        return image * 2.0 - 1.0

    def process_output(self, image: torch.Tensor) -> torch.Tensor:
        """The VAE's -1..1 -> 0..1, clamped."""
        return torch.clamp((image + 1.0) / 2.0, min=0.0, max=1.0)

    def vae_encode_crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] centre-cropped to a multiple of the compression ratio (what encode does)."""
        f = self.downscale
        h, w = (pixels.shape[1] // f) * f, (pixels.shape[2] // f) * f
        top, left = (pixels.shape[1] % f) // 2, (pixels.shape[2] % f) // 2
        return pixels[:, top:top + h, left:left + w, :]

    def memory_used_decode(self, shape: Any, dtype: torch.dtype) -> int:
        cells = int(shape[0]) * int(shape[2]) * int(shape[3])
        return cells * DECODE_BYTES_PER_CELL * torch.tensor([], dtype=dtype).element_size() // 4

    def memory_used_encode(self, shape: Any, dtype: torch.dtype) -> int:
        pixels = int(shape[0]) * int(shape[1]) * int(shape[2])
        return pixels * ENCODE_BYTES_PER_PIXEL * torch.tensor([], dtype=dtype).element_size() // 4

    def decode_tiled(self, samples: torch.Tensor, tile_x: Optional[int] = None, tile_y: Optional[int] = None,
                     overlap: Optional[int] = None, tile_t: Any = None, overlap_t: Any = None, *,
                     tile: Optional[int] = None, progress: Any = None, interrupt: Any = None) -> torch.Tensor:
        size = tile if tile is not None else _square(tile_x, tile_y, 64)
        return self._decode_tiled(samples, size, 16 if overlap is None else overlap, progress, interrupt)

    def encode_tiled(self, pixel_samples: torch.Tensor, tile_x: Optional[int] = None, tile_y: Optional[int] = None,
                     overlap: Optional[int] = None, tile_t: Any = None, overlap_t: Any = None, *,
                     tile: Optional[int] = None, progress: Any = None, interrupt: Any = None) -> torch.Tensor:
        size = tile if tile is not None else _square(tile_x, tile_y, 512)
        return self._encode_tiled(pixel_samples, size, 64 if overlap is None else overlap, progress, interrupt)
