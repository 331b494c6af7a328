"""A CPU fast path for BERT sequence classifiers: the same model and math, less work per step.

    applied = use_fast_path(model)     # [] when the model isn't a plain BertForSequenceClassification

`bertctl train` (unless `train.cpu_fast_path = false`) and `bertctl predict`/`eval` (unless
`--no-fast-path`) call this on CPU; benchmarks/NOTES.md has the measurements. It replaces the forward methods
of transformers' BertSelfAttention/BertLayer, so a transformers release that changes their signatures could
break it: `fast_path_problem` refuses models it does not recognise, and tests/test_fastpath.py compares
logits and gradients with the stock model on every CI run. It changes how the forward pass
runs, never the weights, so the saved model is an ordinary `save_pretrained` dir. What it changes:

- last layer, [CLS] only: a sequence classifier reads only position 0 of the last layer (the pooler takes
  `hidden_states[:, 0]`), so that layer computes keys and values for every token but queries, attention output
  and feed-forward for [CLS] alone. Logits and gradients are those of the full model (about 1/6 of the step's
  matmul work disappears with a 6-layer model).
- attention with an additive padding bias built once per layer from a (batch, 1, 1, keys) row of the mask,
  Q/K/V projected by one matmul (one wider GEMM parallelises better than three narrow ones).
- dropout masks from 16-bit slices of 64-bit random words instead of `bernoulli_` (which draws one random number
  per element and was ~7% of a step): the same Bernoulli(1-p) keep mask with p rounded to 1/65536, drawn from
  torch's default generator, so seeding and checkpointed RNG state (exact resume) work as before.

Logits in eval mode equal the stock model's to float rounding (tests/test_fastpath.py holds that, and gradients).
"""

from __future__ import annotations

import functools
import types

DROP_LEVELS = 1 << 16  # dropout probability resolution: p is rounded to a multiple of 1/65536


def fast_dropout(x, p: float, training: bool):
    """`F.dropout(x, p, training)` with the keep mask drawn as 16-bit random integers (4 per 64-bit draw)."""
    import torch

    if not training or p <= 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    dropped_levels = round(p * DROP_LEVELS)
    if dropped_levels == 0:
        return x
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    levels = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-32768, 32767]
    scale = DROP_LEVELS / (DROP_LEVELS - dropped_levels)
    keep = (levels >= dropped_levels - DROP_LEVELS // 2).to(x.dtype).mul_(scale)
    return x * keep


def _fast_dropout_forward(self, x):
    return fast_dropout(x, self.p, self.training)


def _padding_bias(attention_mask, dtype):
    """(batch, 1, 1, keys) additive bias from transformers' 4D mask (bool for sdpa, additive for eager), or None.

    A bidirectional encoder's padding mask has the same row for every query, so one row per example is enough.
    """
    import torch

    if attention_mask is None:
        return None
    row = attention_mask[:, :, :1, :]
    if row.dtype == torch.bool:
        return torch.zeros(row.shape, dtype=dtype, device=row.device).masked_fill_(~row, torch.finfo(dtype).min)
    return row.to(dtype)


def _self_attention_forward(self, hidden_states, attention_mask=None, *args, cls_only: bool = False, dropout=None, fused_qkv: bool = True, **kwargs):
    """BertSelfAttention.forward for an encoder: (output, None); with cls_only, output has one position."""
    import torch
    import torch.nn.functional as F

    batch, length, _ = hidden_states.shape
    heads, size = self.num_attention_heads, self.attention_head_size
    if not fused_qkv:  # separate projections: works for any Linear, e.g. int8 dynamic-quantized ones
        query = self.query(hidden_states[:, :1] if cls_only else hidden_states).view(batch, -1, heads, size).transpose(1, 2)
        key = self.key(hidden_states).view(batch, length, heads, size)
        value = self.value(hidden_states).view(batch, length, heads, size)
    elif cls_only:
        query = self.query(hidden_states[:, :1]).view(batch, 1, heads, size).transpose(1, 2)
        kv = F.linear(
            hidden_states,
            torch.cat([self.key.weight, self.value.weight]),
            torch.cat([self.key.bias, self.value.bias]),
        ).view(batch, length, 2, heads, size)
        key, value = kv.unbind(2)
    else:
        qkv = F.linear(
            hidden_states,
            torch.cat([self.query.weight, self.key.weight, self.value.weight]),
            torch.cat([self.query.bias, self.key.bias, self.value.bias]),
        ).view(batch, length, 3, heads, size)
        query, key, value = qkv.unbind(2)
        query = query.transpose(1, 2)
    key, value = key.transpose(1, 2), value.transpose(1, 2)
    scores = torch.matmul(query, key.transpose(2, 3)).mul_(self.scaling)
    bias = _padding_bias(attention_mask, scores.dtype)
    if bias is not None:
        scores = scores.add_(bias)
    probs = (dropout or fast_dropout)(torch.softmax(scores, dim=-1), self.dropout.p, self.training)
    out = torch.matmul(probs, value).transpose(1, 2).reshape(batch, query.shape[2], heads * size)
    return out, None


def _cls_only_layer_forward(self, hidden_states, attention_mask=None, *args, **kwargs):
    """BertLayer.forward whose output holds position 0 only: (batch, 1, hidden)."""
    attended, _ = self.attention.self(hidden_states, attention_mask, cls_only=True)
    attention_output = self.attention.output(attended, hidden_states[:, :1])
    return self.feed_forward_chunk(attention_output)


def fast_path_problem(model) -> str | None:
    """Why the fast path doesn't apply to `model` (None when it does)."""
    if type(model).__name__ != "BertForSequenceClassification":
        return f"{type(model).__name__} is not a BertForSequenceClassification"
    config = model.config
    if config.is_decoder or getattr(config, "add_cross_attention", False):
        return "a decoder / cross-attention BERT"
    if getattr(config, "chunk_size_feed_forward", 0):
        return "chunked feed-forward"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return f"attention implementation {config._attn_implementation!r}"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"{config.position_embedding_type} position embeddings"
    layers = getattr(getattr(getattr(model, "bert", None), "encoder", None), "layer", None)
    if not layers or getattr(model.bert, "pooler", None) is None:
        return "no encoder layers or no pooler"
    return None


def use_fast_path(model, *, cls_only: bool = True, cheap_dropout: bool = True, fused_qkv: bool = True) -> list[str]:
    """Patch `model` (in place, instance attributes only) to run faster; returns what was changed.

    Inference can use it too (eval mode: no dropout, and [CLS]-only still saves most of the last layer);
    pass fused_qkv=False when the Linear layers are not plain nn.Linear (e.g. int8 dynamic-quantized).
    The other keywords switch parts off for benchmarks/profile_train_step.py's ablations.
    """
    import torch

    if fast_path_problem(model) is not None:
        return []
    layers = model.bert.encoder.layer
    attention = functools.partial(_self_attention_forward, fused_qkv=fused_qkv)
    if not cheap_dropout:
        attention = functools.partial(attention, dropout=torch.nn.functional.dropout)
    for layer in layers:
        layer.attention.self.forward = types.MethodType(attention, layer.attention.self)
    applied = ["one-GEMM QKV attention" if fused_qkv else "attention with a padding bias"]
    if cls_only:
        layers[-1].forward = types.MethodType(_cls_only_layer_forward, layers[-1])
        applied.append("last layer [CLS] only")
    if cheap_dropout:
        dropouts = 0
        for module in model.modules():
            if type(module) is torch.nn.Dropout:
                module.forward = types.MethodType(_fast_dropout_forward, module)
                dropouts += 1
        applied.append(f"cheap dropout masks ({dropouts} modules + attention)")
    return applied


def undo_fast_path(model) -> None:
    """Restore the stock forward methods (drop the instance attributes `use_fast_path` set)."""
    for module in model.modules():
        module.__dict__.pop("forward", None)
