"""The three parts of an Idefics3/SmolVLM model as plain torch modules with tensor-only inputs,
for exporters that trace (torch.onnx, openvino.convert_model).

The decoder takes the KV cache as flat tensors and builds its own 4-D attention mask: the mask is
the one contract the static (npu) layout needs that transformers' own mask builder cannot trace
(it uses vmap), and building it here also lets unused slots of a fixed KV buffer be masked.
"""

from __future__ import annotations

import torch
from torch import nn


def text_model(model: nn.Module) -> nn.Module:
    return model.model.text_model


def kv_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


class VisionEncoder(nn.Module):
    """pixel_values [1, 3, S, S] (one whole image) -> image features [1, tokens, hidden].

    The patch position ids are fixed (facts.patch_position_ids): transformers computes them with
    a loop and an in-place scatter that the ONNX tracer turns into a mistyped graph, and for one
    whole image they never change. Nothing is masked: every patch is real.
    """

    def __init__(self, model: nn.Module, position_ids: list[int]) -> None:
        super().__init__()
        self.vision = model.model.vision_model
        self.connector = model.model.connector
        self.register_buffer("position_ids", torch.tensor([position_ids]), persistent=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        emb = self.vision.embeddings
        x = emb.patch_embedding(pixel_values).flatten(2).transpose(1, 2)
        x = x + emb.position_embedding(self.position_ids)
        x = self.vision.encoder(inputs_embeds=x).last_hidden_state
        return self.connector(self.vision.post_layernorm(x))


class TokenEmbedding(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embed = text_model(model).get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class Decoder(nn.Module):
    """inputs_embeds [b, q, h], attention_mask [b, past + q], position_ids [b, q], then
    past_key_values.{i}.key|value [b, kv_heads, past, d] -> logits [b, q, vocab] and
    present.{i}.key|value: past + new ([b, kv_heads, past + q, d]), or with new_only the q new
    entries alone (the static layout, where the caller owns the KV buffer).

    Query j sits at key position past + j and sees every unmasked key at or before it.
    """

    def __init__(self, model: nn.Module, new_only: bool = False) -> None:
        super().__init__()
        self.lm = text_model(model)
        self.head = model.lm_head
        self.num_layers = model.config.text_config.num_hidden_layers
        self.new_only = new_only

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        q, kv = inputs_embeds.shape[1], attention_mask.shape[1]
        key_pos = torch.arange(kv)[None, :]
        query_pos = (kv - q + torch.arange(q))[:, None]
        allowed = (key_pos <= query_pos)[None, None] & attention_mask[:, None, None, :].bool()
        mask = torch.where(allowed, 0.0, torch.finfo(inputs_embeds.dtype).min)
        # Layers filled directly: DynamicCache.update would concatenate onto an empty tensor,
        # which OpenVINO's PyTorch frontend cannot convert.
        cache = DynamicCache()
        for i in range(self.num_layers):
            layer = DynamicLayer()
            layer.dtype, layer.device = past[2 * i].dtype, past[2 * i].device
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            layer.is_initialized = True
            cache.layers.append(layer)
        out = self.lm(
            inputs_embeds=inputs_embeds,
            attention_mask=mask.to(inputs_embeds.dtype),
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
        )
        results = [self.head(out.last_hidden_state)]
        for layer in out.past_key_values.layers:
            for t in (layer.keys, layer.values):
                results.append(t[:, :, -q:, :] if self.new_only else t)
        return tuple(results)
