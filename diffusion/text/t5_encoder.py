"""T5's encoder (T5-XXL for SD3 and Flux) built from a weight file, read as ComfyUI reads it.

The network is transformers' T5EncoderModel, configured from tensor shapes: width from the shared embedding, depth
from the blocks, heads from the relative-position bias table (which only the first block stores), the feed-forward
kind from its keys (`wi_0`/`wi_1`: T5 v1.1's gated GELU; `wi`: the original ReLU). Prompts are one window of their
own length (at least 77 tokens, padded with `<pad>`; no start token, `</s>` at the end) and every token attends to
every other, padding included (no attention mask), which is how SD3 and Flux were trained to read T5.

What the encoder gives is the final layer norm of the last block; a CLIP-skip setting `s` (CLIPSetLastLayer, which
ComfyUI applies to every encoder of a model) takes the output of block n + 1 + s instead, through the same norm.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .prompt_weights import TokenWindow, embed_windows
from .t5_tokenizer import END_ID, PAD_ID

T5_PREFIXES = ("encoder.", "shared.")
MIN_TOKENS = 77  # prompts are padded to at least this many tokens


def is_t5_state(state: Dict[str, torch.Tensor]) -> bool:
    return "encoder.block.0.layer.0.SelfAttention.q.weight" in state


def _t5_config(state: Dict[str, torch.Tensor]):
    from transformers import T5Config
    embed = state.get("shared.weight", state.get("encoder.embed_tokens.weight"))
    if embed is None:
        raise ValueError("T5 weights without a token embedding (shared.weight)")
    bias = state.get("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    if bias is None:
        raise ValueError("T5 weights without the relative position bias of the first block")
    layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.block."))
    heads = int(bias.shape[1])
    inner = int(state["encoder.block.0.layer.0.SelfAttention.q.weight"].shape[0])
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state
    ff_key = "wi_0" if gated else "wi"
    d_ff = int(state[f"encoder.block.0.layer.1.DenseReluDense.{ff_key}.weight"].shape[0])
    return T5Config(vocab_size=int(embed.shape[0]), d_model=int(embed.shape[1]), d_kv=inner // heads, d_ff=d_ff,
                    num_layers=layers, num_heads=heads, relative_attention_num_buckets=int(bias.shape[0]),
                    feed_forward_proj="gated-gelu" if gated else "relu", is_encoder_decoder=False,
                    use_cache=False, dropout_rate=0.0)


class T5TextEncoder(nn.Module):
    """One T5 encoder in the role `t5xxl`: the interface of ClipTextEncoder (windows in, hidden states out)."""

    role = "t5xxl"
    pad_id = PAD_ID
    end_id = END_ID

    def __init__(self, model: nn.Module, unused: Optional[List[str]] = None):
        super().__init__()
        self.model = model
        self.layout = "hf"
        self.ignored_keys: List[str] = []
        self.unused_keys: List[str] = list(unused or [])

    @classmethod
    def from_weights(cls, state: Dict[str, torch.Tensor], dtype: Optional[torch.dtype] = None,
                     device=None) -> "T5TextEncoder":
        """From T5 weights in transformers' layout (`encoder.block.*`, `shared.weight`; prefix removed)."""
        from transformers import T5EncoderModel
        config = _t5_config(state)
        state = dict(state)
        embed = state.pop("shared.weight", None)
        tied = state.pop("encoder.embed_tokens.weight", None)
        embed = embed if embed is not None else tied
        state["shared.weight"] = embed
        if dtype is None:
            dtype = embed.dtype
        with torch.device("meta"):
            model = T5EncoderModel(config)
        state = {k: v.to(device=device or "cpu", dtype=dtype) for k, v in state.items()}
        result = model.load_state_dict(state, strict=False, assign=True)
        missing = [k for k in result.missing_keys if k != "encoder.embed_tokens.weight"]
        if missing:
            raise ValueError(f"t5xxl text encoder weights are incomplete; missing {', '.join(missing[:6])}"
                             f"{' ...' if len(missing) > 6 else ''}")
        model.encoder.embed_tokens = model.shared  # tied, as transformers ties them
        model.eval().requires_grad_(False)
        return cls(model, list(result.unexpected_keys))

    @property
    def width(self) -> int:
        return int(self.model.config.d_model)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_layers)

    @property
    def window(self) -> int:
        return MIN_TOKENS

    def empty_window(self, length: int) -> TokenWindow:
        """The empty prompt at `length` tokens: `</s>`, then padding (the reference weights scale against)."""
        return TokenWindow([END_ID] + [PAD_ID] * (length - 1), [1.0] * length, 0)

    def check_skip(self, clip_skip: Optional[int]) -> int:
        skip = -1 if clip_skip is None else int(clip_skip)
        if not -self.num_layers <= skip <= -1:
            raise ValueError(f"clip_skip {clip_skip} is out of range for the t5xxl text encoder "
                             f"(-1 = last layer ... -{self.num_layers})")
        return skip

    def forward(self, windows: Sequence[TokenWindow], clip_skip: Optional[int] = None,
                need_pooled: bool = False) -> Tuple[torch.Tensor, None]:
        """(hidden [n, T, width], None): T5 has no pooled output."""
        skip = self.check_skip(clip_skip)
        x = embed_windows(self.model.shared, windows, self.role)
        take = self.num_layers + 1 + skip
        out = self.model.encoder(inputs_embeds=x, output_hidden_states=take != self.num_layers, return_dict=True)
        if take == self.num_layers:
            return out.last_hidden_state, None
        return self.model.encoder.final_layer_norm(out.hidden_states[take]), None
