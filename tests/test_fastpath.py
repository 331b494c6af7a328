"""The fast path must compute the stock model's function (same logits, gradients, dropout law) and stay an
ordinary model: other outputs, pickling, state-dict names and saved dirs as the stock model has them."""

from __future__ import annotations

import pytest

from bertctl.fastpath import fast_dropout, fast_path_problem, undo_fast_path, use_fast_path


def _classifier(seed: int = 0, **config):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=200, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64, num_labels=3, **config)
    return BertForSequenceClassification(cfg)


def _padded_batch():
    import torch

    torch.manual_seed(1)
    lengths = [12, 5, 9, 1 + 1]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(5, 200, (n,))
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": torch.tensor([0, 2, 1, 2])}


@pytest.mark.parametrize("attn,fused_qkv,extra", [("sdpa", True, {}), ("eager", True, {}), ("sdpa", False, {}), ("sdpa", True, {"chunk_size_feed_forward": 4})])
def test_fastpath_logits_and_gradients_equal_the_stock_model(attn, fused_qkv, extra):
    import torch

    stock, fast = _classifier(attn_implementation=attn, **extra), _classifier(attn_implementation=attn, **extra)
    assert use_fast_path(fast, fused_qkv=fused_qkv)
    batch = _padded_batch()
    stock.eval(), fast.eval()  # eval: no dropout, so both compute the same deterministic function
    with torch.no_grad():
        assert torch.allclose(stock(**batch).logits, fast(**batch).logits, atol=1e-5)
    loss_stock, loss_fast = stock(**batch).loss, fast(**batch).loss
    loss_stock.backward(), loss_fast.backward()
    for (name, a), b in zip(stock.named_parameters(), fast.parameters()):
        if name.endswith("attention.self.key.bias"):
            continue  # softmax is shift-invariant: this gradient is exactly 0 in exact arithmetic, rounding noise here
        assert torch.allclose(a.grad, b.grad, atol=1e-6, rtol=1e-4), name


def test_fastpath_padding_does_not_leak_into_the_prediction():
    import torch

    model = _classifier()
    use_fast_path(model)
    model.eval()
    batch = _padded_batch()
    with torch.no_grad():
        padded = model(input_ids=batch["input_ids"][1:2], attention_mask=batch["attention_mask"][1:2]).logits
        trimmed = model(input_ids=batch["input_ids"][1:2, :5], attention_mask=batch["attention_mask"][1:2, :5]).logits
    assert torch.allclose(padded, trimmed, atol=1e-5)


def test_fastpath_leaves_other_models_alone_and_undo_restores():
    import torch
    from transformers import BertConfig, BertForMaskedLM

    mlm = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    assert fast_path_problem(mlm) and use_fast_path(mlm) == []
    model = _classifier()
    use_fast_path(model)
    undo_fast_path(model)
    assert not any("forward" in m.__dict__ for m in model.modules())
    stock = _classifier()
    assert [type(m) for m in model.modules()] == [type(m) for m in stock.modules()]
    assert model.config._attn_implementation == stock.config._attn_implementation
    model.eval()
    batch = _padded_batch()
    with torch.no_grad():
        assert model.bert(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state.shape[1] == batch["input_ids"].shape[1]


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_fastpath_dropout_keeps_the_expectation_and_the_rate(p):
    import torch

    x = torch.ones(400_000)
    torch.manual_seed(0)
    out = fast_dropout(x, p, True)
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01  # kept values are scaled by 1/(1-p)
    assert torch.equal(fast_dropout(x, p, False), x)
    torch.manual_seed(0)
    assert torch.equal(fast_dropout(x, p, True), out)  # drawn from torch's seeded generator: reproducible


def test_fastpath_dropout_gradient_uses_the_same_mask():
    import torch

    x = torch.randn(1000, requires_grad=True)
    torch.manual_seed(3)
    out = fast_dropout(x, 0.5, True)
    out.sum().backward()
    assert torch.equal(x.grad == 0, out.detach() == 0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_fastpath_runs_int8_quantized_models_without_fusing_qkv():
    import torch
    from torch.ao.quantization import quantize_dynamic

    def int8(**fast):
        model = quantize_dynamic(_classifier().eval(), {torch.nn.Linear}, dtype=torch.qint8)
        if fast:
            assert use_fast_path(model, fused_qkv=False, **fast)
        return model

    batch = _padded_batch()
    with torch.no_grad():
        fp32 = _classifier().eval()(**batch).logits
        stock = int8()(**batch).logits
        assert torch.equal(int8(cls_only=False)(**batch).logits, stock)
        # int8 activations are quantized with each input's own range, so [CLS]-only inputs round differently:
        # the change must stay within int8's own error against fp32
        cls_only = int8(cls_only=True)(**batch).logits
        assert (cls_only - stock).abs().max() <= 2 * (stock - fp32).abs().max() + 1e-6


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fastpath_returns_the_full_models_attentions_and_hidden_states(attn):
    import torch

    stock, fast = _classifier(attn_implementation="eager"), _classifier(attn_implementation=attn)  # eager: stock attentions
    use_fast_path(fast)
    stock.eval(), fast.eval()
    batch = {k: v for k, v in _padded_batch().items() if k != "labels"}
    with torch.no_grad():
        want = stock(**batch, output_attentions=True, output_hidden_states=True)
        got = fast(**batch, output_attentions=True, output_hidden_states=True)
        assert fast.bert(**batch).last_hidden_state.shape[1] == 1  # a plain call is back on the [CLS]-only path
        fast.config.output_hidden_states = True  # asked for through the config, as transformers allows
        from_config = fast(**batch)
    assert len(got.hidden_states) == len(from_config.hidden_states) == len(want.hidden_states) == 4
    assert len(got.attentions) == len(want.attentions) == 3
    for a, b, c in zip(want.hidden_states, got.hidden_states, from_config.hidden_states):
        assert a.shape == b.shape == c.shape and torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)
    for a, b in zip(want.attentions, got.attentions):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(want.logits, got.logits, atol=1e-5)


def test_fastpath_model_pickles_and_deep_copies_as_a_fast_path_model():
    import copy
    import pickle

    import torch

    model = _classifier()
    use_fast_path(model)
    batch = _padded_batch()
    model(**batch).loss.backward()  # after a training step, as a checkpointing or forking caller would hold it
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        want = model(**batch).logits
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            assert torch.equal(clone(**batch).logits, want)
            encoder = clone.bert.encoder
            assert encoder.stock[0].layer is encoder.layer  # one set of layers, still shared after the copy
            assert use_fast_path(clone) and fast_path_problem(clone) is None


def test_fastpath_keeps_state_dict_names_and_saves_a_stock_model(tmp_path):
    import json

    import torch
    from transformers import AutoModelForSequenceClassification

    model = _classifier()
    use_fast_path(model)
    assert list(model.state_dict()) == list(_classifier().state_dict())
    model.save_pretrained(tmp_path)
    assert "bertctl" not in json.dumps(json.loads((tmp_path / "config.json").read_text()))
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert fast_path_problem(loaded) is None and type(loaded.bert.encoder).__name__ == "BertEncoder"
    model.eval()
    batch = {k: v for k, v in _padded_batch().items() if k != "labels"}
    with torch.no_grad():
        assert torch.allclose(loaded(**batch).logits, model(**batch).logits, atol=1e-5)


def test_fastpath_refuses_models_whose_structure_differs_even_under_the_stock_name():
    import torch
    from transformers import models

    class BertForSequenceClassification(models.bert.BertForSequenceClassification):  # the same class name
        def forward(self, input_ids=None, attention_mask=None, **kwargs):  # mean pooling: reads every position
            hidden = self.bert(input_ids, attention_mask=attention_mask).last_hidden_state
            return self.classifier(hidden.mean(1))

    mean_pooled = BertForSequenceClassification(_classifier().config)
    assert "has its own forward" in fast_path_problem(mean_pooled) and use_fast_path(mean_pooled) == []
    patched = _classifier()
    patched.bert.pooler.forward = lambda hidden: torch.tanh(patched.bert.pooler.dense(hidden.mean(1)))
    assert "bert.pooler" in fast_path_problem(patched) and use_fast_path(patched) == []
