"""A CPU fast path for BERT sequence classifiers: the same weights and function, less work per step.

    applied = use_fast_path(model)     # [] when the model isn't a stock BertForSequenceClassification

`bertctl train` (unless `train.cpu_fast_path = false`) and `bertctl predict`/`eval` (unless `--no-fast-path`)
apply it on CPU; benchmarks/NOTES.md has the measurements. A CPU step is bound by matmuls and random draws,
and the stock forward spends some of both on results a classifier never reads:

- last layer, [CLS] only: the head reads position 0 of the last layer alone (the pooler takes
  `hidden_states[:, 0]`), so that layer needs keys and values for every token but queries, attention output and
  feed-forward for [CLS] only (about 1/6 of a 6-layer model's matmuls), with the full model's logits and
  gradients. So `model.bert(...)` on a fast-path model returns a one-position `last_hidden_state`.
- Q, K and V by one matmul (one wider GEMM parallelises better than three narrow ones), and an additive
  (batch, 1, 1, keys) padding bias built once per forward: an encoder's padding mask is the same for every query.
- dropout masks from 16-bit slices of 64-bit random words instead of `bernoulli_` (one random number per element,
  ~7% of a step): the same Bernoulli(1-p) keep mask with p rounded to 1/65536, drawn from torch's default
  generator, so seeding and the checkpointed RNG state (exact resume) work as before.

Explicit modules, so the model stays an ordinary one: `FastEncoder` takes the place of `bert.encoder` holding
the very same `layer` list (state-dict names and `save_pretrained` output unchanged: stock transformers loads
them), `CheapDropout` replaces `nn.Dropout` by module swap, and the attention kernel and its mask are registered
through transformers' public `AttentionInterface`/`AttentionMaskInterface`. Nothing is assigned onto instances,
so the model pickles and deep-copies. `FastEncoder` reads its layers' submodules by name (the state-dict names,
stable across releases) rather than calling their `forward` (whose signatures change). A call that asks for
attentions or hidden states runs the stock encoder on the same kernel, so those outputs are the full model's
(attentions included, which stock sdpa doesn't return). `fast_path_problem` checks the structure this relies on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import bidirectional_mask_function, eager_mask
from transformers.modeling_outputs import BaseModelOutputWithPastAndCrossAttentions

ATTENTION = "bertctl"  # the name the kernel below is registered under
DROP_LEVELS = 1 << 16  # dropout probability resolution: p is rounded to a multiple of 1/65536


def fast_dropout(x, p: float, training: bool):
    """`F.dropout(x, p, training)` with the keep mask drawn as 16-bit random integers (4 per 64-bit draw)."""
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


class CheapDropout(nn.Dropout):
    """`nn.Dropout` with its keep mask from `fast_dropout`."""

    def forward(self, input):
        return fast_dropout(input, self.p, self.training)


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The attention kernel: (batch, queries, heads, size) output and the attention probabilities."""
    scores = torch.matmul(query, key.transpose(2, 3)).mul_(query.shape[-1] ** -0.5 if scaling is None else scaling)
    if attention_mask is not None and attention_mask.dtype == torch.bool:  # a caller's own 4D mask
        scores = scores.masked_fill_(~attention_mask, torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores.add_(attention_mask)
    probs = torch.softmax(scores, dim=-1)
    if dropout:
        probs = module.dropout(probs)  # the module's own dropout: CheapDropout once swapped
    return torch.matmul(probs, value).transpose(1, 2), probs


def padding_bias(batch_size, q_length, kv_length, *, attention_mask=None, mask_function=None, dtype=torch.float32, allow_is_bidirectional_skip=False, **kwargs):
    """The kernel's mask: an additive (batch, 1, 1, keys) padding bias, or None when nothing is padded."""
    if mask_function is not bidirectional_mask_function:  # a causal or custom pattern: the full 4D mask
        return eager_mask(batch_size, q_length, kv_length, mask_function=mask_function, attention_mask=attention_mask, dtype=dtype, **kwargs)
    if attention_mask is None or (allow_is_bidirectional_skip and bool(attention_mask.all())):
        return None
    keep = attention_mask[:, None, None, :]
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill_(~keep, torch.finfo(dtype).min)


AttentionInterface.register(ATTENTION, attention)
AttentionMaskInterface.register(ATTENTION, padding_bias)


class FastEncoder(nn.Module):
    """`bert.encoder` on the fast path: the same `layer` list, run from its submodules (see the module docstring)."""

    def __init__(self, encoder, *, cls_only: bool, fused_qkv: bool):
        super().__init__()
        self.config = encoder.config
        self.layer = encoder.layer  # the same modules, so the same state-dict names
        self.stock = (encoder,)  # a tuple, not a submodule: no second set of names; runs requested outputs
        self.stock_attention = encoder.config._attn_implementation  # for undo_fast_path
        self.cls_only, self.fused_qkv = cls_only, fused_qkv

    def forward(self, hidden_states, attention_mask=None, **kwargs):
        # the same precedence as transformers' capture_outputs; output_hidden_states may be an index (0) or a list
        wanted = (kwargs.get(f"output_{k}", getattr(self.config, f"output_{k}", False)) for k in ("attentions", "hidden_states"))
        if any(v is not None and v is not False for v in wanted) or any(layer.gradient_checkpointing for layer in self.layer):
            return self.stock[0](hidden_states, attention_mask=attention_mask, **kwargs)
        for i, layer in enumerate(self.layer):
            hidden_states = self._layer(layer, hidden_states, attention_mask, cls_only=self.cls_only and i == len(self.layer) - 1)
        return BaseModelOutputWithPastAndCrossAttentions(last_hidden_state=hidden_states)

    def _layer(self, layer, hidden, bias, *, cls_only: bool):
        """One BertLayer; with cls_only its output holds position 0 alone: (batch, 1, hidden)."""
        heads = layer.attention.self
        batch, length, _ = hidden.shape
        shape = (batch, -1, heads.num_attention_heads, heads.attention_head_size)
        queries = hidden[:, :1] if cls_only else hidden
        projected = [heads.query(queries).view(shape)] if cls_only else []
        projections = [heads.key, heads.value] if cls_only else [heads.query, heads.key, heads.value]
        if self.fused_qkv:
            weight, b = torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections])
            projected += F.linear(hidden, weight, b).view(batch, length, len(projections), *shape[2:]).unbind(2)
        else:  # any Linear, e.g. int8 dynamic-quantized ones
            projected += [p(hidden).view(shape) for p in projections]
        query, key, value = (t.transpose(1, 2) for t in projected)
        context, _ = attention(heads, query, key, value, bias, scaling=heads.scaling, dropout=heads.dropout.p if heads.training else 0.0)
        attended = layer.attention.output(context.reshape(batch, -1, shape[2] * shape[3]), queries)
        return layer.output(layer.intermediate(attended), attended)


def fast_path_problem(model) -> str | None:
    """Why the fast path doesn't apply to `model` (None when it does): checked by structure, not by name."""
    from transformers.models.bert import modeling_bert as bert

    if not isinstance(model, bert.BertForSequenceClassification):
        return f"{type(model).__name__} is not a BertForSequenceClassification"
    if model.config.is_decoder or getattr(model.config, "add_cross_attention", False):
        return "a decoder / cross-attention BERT"
    # [CLS]-only is right only when the head reads nothing but position 0 the stock way
    pooler = model.bert.pooler
    for module, stock in ((model, bert.BertForSequenceClassification), (model.bert, bert.BertModel), (pooler, bert.BertPooler)):
        if type(module).forward is not stock.forward:
            return f"{type(module).__name__} has its own forward"
    layers = getattr(model.bert.encoder, "layer", None)
    if not layers:
        return "no encoder layers"
    for i, layer in enumerate(layers):
        if type(layer) is not bert.BertLayer or type(layer.attention.self) is not bert.BertSelfAttention:
            return f"encoder layer {i} is not a stock BertLayer"
    patched = next((name for name, m in model.named_modules() if "forward" in vars(m)), None)
    if patched is not None:
        return f"{patched or 'the model'} has a forward set on the instance"
    return None


def use_fast_path(model, *, cls_only: bool = True, cheap_dropout: bool = True, fused_qkv: bool = True) -> list[str]:
    """Put `model` (in place) on the fast path; returns what was applied ([] when it doesn't apply).

    Inference can use it too (eval mode: no dropout, and [CLS]-only still saves most of the last layer). Q, K
    and V are fused only when they are plain nn.Linear (not, e.g., int8 dynamic-quantized ones). The keywords
    switch parts off for benchmarks/profile_train_step.py's ablations; applying again replaces the settings.
    """
    undo_fast_path(model)
    if fast_path_problem(model) is not None:
        return []
    encoder = model.bert.encoder
    fused_qkv = fused_qkv and all(type(getattr(layer.attention.self, p)) is nn.Linear for layer in encoder.layer for p in ("query", "key", "value"))
    model.bert.encoder = FastEncoder(encoder, cls_only=cls_only, fused_qkv=fused_qkv).train(encoder.training)
    model.set_attn_implementation(ATTENTION)
    applied = ["one-GEMM QKV attention" if fused_qkv else "attention with a padding bias"]
    if cls_only:
        applied.append("last layer [CLS] only")
    if cheap_dropout:
        swapped = _swap_dropout(model, nn.Dropout, CheapDropout)
        applied.append(f"cheap dropout masks ({swapped} modules + attention)")
    return applied


def undo_fast_path(model) -> None:
    """Put the stock encoder, dropout modules and attention implementation back (a no-op off the fast path)."""
    encoder = getattr(getattr(model, "bert", None), "encoder", None)
    if isinstance(encoder, FastEncoder):
        model.bert.encoder = encoder.stock[0].train(encoder.training)
        model.set_attn_implementation(encoder.stock_attention)
        _swap_dropout(model, CheapDropout, nn.Dropout)


def _swap_dropout(model, old: type, new: type) -> int:
    """Replace every `old` dropout module (exact type, not in-place) by a `new` one with the same p; returns how many."""
    swaps = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children() if type(child) is old and not child.inplace]
    for parent, name, child in swaps:
        setattr(parent, name, new(child.p).train(child.training))
    return len(swaps)
