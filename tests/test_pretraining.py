"""MLM masking as in BERT, [MASK] filling, and continued pre-training (`bertctl pretrain`)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.masking import IGNORE_INDEX, MaskingCollator, NextSentencePairs, mask_tokens, sentence_token_ids, split_sentences
from bertctl.pretraining import pretraining_logits, split_heldout
from bertctl.modeling import load_masked_lm
from bertctl.pretraining import fill_mask
from tests.conftest import agnews_rows, write_csv

runner = CliRunner()
MASK_ID = 3

VOCAB = 1000


def synthetic_batch(rows: int = 2000, length: int = 128, seed: int = 0):
    """Token ids 10..VOCAB-1 with [CLS]=1 / [SEP]=2 ends and random-length padding (0)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (rows, length), generator=gen)
    lengths = torch.randint(8, length + 1, (rows,), generator=gen)
    positions = torch.arange(length)[None, :]
    real = positions < lengths[:, None]
    ids[:, 0] = 1
    ids[torch.arange(rows), lengths - 1] = 2
    ids[~real] = 0
    special = (ids == 1) | (ids == 2)
    return ids, real & ~special, real


def test_pretraining_masking_proportions_match_bert():
    ids, maskable, _ = synthetic_batch()
    gen = torch.Generator().manual_seed(1)
    inputs, labels, selected = mask_tokens(ids, maskable, mask_token_id=MASK_ID, vocab_size=VOCAB, generator=gen)
    n_maskable = int(maskable.sum())
    n_selected = int(selected.sum())
    assert n_maskable > 100_000
    assert n_selected / n_maskable == pytest.approx(0.15, abs=0.005)
    as_mask = int((inputs[selected] == MASK_ID).sum())
    unchanged = int((inputs[selected] == ids[selected]).sum())
    random = n_selected - as_mask - unchanged
    assert as_mask / n_selected == pytest.approx(0.80, abs=0.01)
    assert random / n_selected == pytest.approx(0.10, abs=0.01)
    assert unchanged / n_selected == pytest.approx(0.10, abs=0.01)
    # random replacements draw from the whole vocabulary
    replaced = inputs[selected & (inputs != MASK_ID) & (inputs != ids)]
    assert replaced.min() >= 0 and replaced.max() < VOCAB and replaced.unique().numel() > VOCAB // 2


def test_pretraining_labels_are_ignore_outside_selected_and_original_inside():
    ids, maskable, real = synthetic_batch(rows=300)
    inputs, labels, selected = mask_tokens(ids, maskable, mask_token_id=MASK_ID, vocab_size=VOCAB, generator=torch.Generator().manual_seed(2))
    assert (labels[~selected] == IGNORE_INDEX).all()
    assert torch.equal(labels[selected], ids[selected])
    # never selected: special tokens and padding, whose inputs stay exactly as they were
    assert not selected[~maskable].any()
    assert torch.equal(inputs[~maskable], ids[~maskable])
    assert not (inputs[~selected] != ids[~selected]).any()


def test_pretraining_mask_probability_settings_are_honoured():
    ids, maskable, _ = synthetic_batch(rows=500, seed=3)
    inputs, _, selected = mask_tokens(
        ids, maskable, mask_token_id=MASK_ID, vocab_size=VOCAB, mlm_probability=0.4, mask_replace_prob=1.0, random_replace_prob=0.0,
        generator=torch.Generator().manual_seed(3),
    )
    assert int(selected.sum()) / int(maskable.sum()) == pytest.approx(0.4, abs=0.01)
    assert (inputs[selected] == MASK_ID).all()
    with pytest.raises(ValueError):
        mask_tokens(ids, maskable, mask_token_id=MASK_ID, vocab_size=VOCAB, mask_replace_prob=0.9, random_replace_prob=0.2)


@pytest.fixture(scope="module")
def tokenizer(bundled_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(bundled_tokenizer_dir)


def tokenized(tokenizer, texts, with_index=True):
    enc = tokenizer(texts, truncation=True, max_length=64)
    return [
        {"input_ids": ids, "token_type_ids": types, **({"index": i} if with_index else {})}
        for i, (ids, types) in enumerate(zip(enc["input_ids"], enc["token_type_ids"]))
    ]


def test_pretraining_collator_never_masks_special_tokens_or_padding(tokenizer):
    texts = [r["text"] for r in agnews_rows("train", 64)] + ["short", "two words"]
    examples = tokenized(tokenizer, texts)
    special = torch.tensor(tokenizer.all_special_ids)
    for epoch in range(5):
        collator = MaskingCollator(tokenizer, seed=epoch, mlm_probability=0.5)
        batch = collator(examples)
        original = collator.pad(examples)["input_ids"]
        protected = torch.isin(original, special) | (batch["attention_mask"] == 0)
        assert protected.any()
        assert (batch["labels"][protected] == IGNORE_INDEX).all()
        assert torch.equal(batch["input_ids"][protected], original[protected])
        assert (batch["labels"] != IGNORE_INDEX).any()


def test_pretraining_whole_word_masking_masks_all_pieces_together(tokenizer):
    texts = ["tokenization of unbelievable embeddings is uncharacteristically interesting"] * 200 + [r["text"] for r in agnews_rows("train", 50)]
    examples = tokenized(tokenizer, texts)
    collator = MaskingCollator(tokenizer, whole_word_masking=True, seed=0)
    batch = collator(examples)
    ids = collator.pad(examples)["input_ids"]
    selected = batch["labels"] != IGNORE_INDEX
    continuation = collator.is_continuation[ids] & (batch["attention_mask"] == 1)
    words_checked = 0
    partially_selected = 0
    for row in range(ids.shape[0]):
        tokens = tokenizer.convert_ids_to_tokens(ids[row].tolist())
        start = None
        for pos in range(1, ids.shape[1] + 1):
            is_cont = pos < ids.shape[1] and bool(continuation[row, pos])
            if is_cont:
                continue
            if start is not None and pos - start > 1:  # a word of several pieces: start..pos-1
                flags = selected[row, start:pos]
                words_checked += 1
                partially_selected += int(flags.any() and not flags.all())
                assert flags.all() or not flags.any(), tokens[start:pos]
            start = pos if pos < ids.shape[1] and tokens[pos] not in tokenizer.all_special_tokens else None
    assert words_checked > 500 and partially_selected == 0
    # multi-piece words were actually selected, and each selected piece still goes through 80/10/10
    assert (selected & continuation).sum() > 50
    share = float(selected.sum() / collator.maskable(ids, batch["attention_mask"]).sum())
    assert share == pytest.approx(0.15, abs=0.03)


def test_pretraining_token_level_masking_splits_words(tokenizer):
    # the control for the test above: without whole-word masking, pieces of one word are selected independently
    texts = ["tokenization of unbelievable embeddings is uncharacteristically interesting"] * 200
    examples = tokenized(tokenizer, texts)
    collator = MaskingCollator(tokenizer, whole_word_masking=False, seed=0)
    batch = collator(examples)
    ids = collator.pad(examples)["input_ids"]
    selected = batch["labels"] != IGNORE_INDEX
    continuation = collator.is_continuation[ids]
    # a continuation piece selected while the piece before it is not
    split = selected[:, 1:] & continuation[:, 1:] & ~selected[:, :-1]
    assert split.any()


def test_pretraining_masks_depend_only_on_seed_epoch_and_example(tokenizer):
    examples = tokenized(tokenizer, [r["text"] for r in agnews_rows("train", 12)])
    collator = MaskingCollator(tokenizer, seed=5)
    whole = collator(examples)["labels"]
    # the same examples in another batch composition get the same masks
    part = collator(examples[3:6])["labels"]
    assert torch.equal(part, whole[3:6, : part.shape[1]])
    collator.set_epoch(1)
    assert not torch.equal(collator(examples)["labels"], whole)
    assert torch.equal(MaskingCollator(tokenizer, seed=5)(examples)["labels"], whole)


def test_pretraining_selected_positions_loss_equals_full_mlm_loss(tiny_bert_dir, tokenizer):
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(tiny_bert_dir).eval()
    batch = MaskingCollator(tokenizer, seed=1)(tokenized(tokenizer, [r["text"] for r in agnews_rows("train", 8)]))
    logits, gold = pretraining_logits(model, batch)["mlm"]
    with torch.no_grad():
        full = model(**batch).loss
        ours = torch.nn.functional.cross_entropy(logits, gold)
    assert gold.numel() == int((batch["labels"] != IGNORE_INDEX).sum()) > 0
    assert float(ours) == pytest.approx(float(full), rel=1e-5)


def test_pretraining_heldout_split_is_seeded_and_disjoint():
    train, held = split_heldout(100, 0.1, seed=3)
    assert len(held) == 10 and not set(train) & set(held) and sorted(train + held) == list(range(100))
    assert split_heldout(100, 0.1, seed=3) == (train, held)
    assert split_heldout(2, 0.1, seed=0)[1] and split_heldout(2, 0.1, seed=0)[0]


# ---------------------------------------------------------------------------------------------
# fill-mask


@pytest.fixture(scope="module")
def tiny_mlm_dir(tmp_path_factory, tiny_bert_dir, bundled_tokenizer_dir):
    """A tiny BertForMaskedLM whose output bias makes 'store' the answer to every [MASK]."""
    from transformers import AutoTokenizer, BertForMaskedLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_tokenizer_dir)
    torch.manual_seed(0)
    model = BertForMaskedLM.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        model.cls.predictions.bias[tokenizer.convert_tokens_to_ids("store")] = 30.0
        model.cls.predictions.bias[tokenizer.convert_tokens_to_ids("market")] = 28.0
        model.cls.predictions.bias[tokenizer.convert_tokens_to_ids("[unused1]")] = 26.0
    out = tmp_path_factory.mktemp("tiny-mlm")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_pretraining_fill_mask_ranks_tokens_per_mask(tiny_mlm_dir):
    result = fill_mask(str(tiny_mlm_dir), "The man went to the [MASK]. He bought [MASK].", top_k=3)
    assert len(result.masks) == 2
    assert [m.position for m in result.masks] == [i for i, t in enumerate(result.tokens) if t == "[MASK]"]
    for prediction in result.masks:
        tokens = [c["token"] for c in prediction.candidates]
        probs = [c["probability"] for c in prediction.candidates]
        assert tokens == ["store", "market", "[unused1]"]
        assert probs == sorted(probs, reverse=True) and 0.8 < probs[0] < 1.0
    assert result.filled.count("store") == 2


def test_pretraining_fill_mask_cli(tiny_mlm_dir, tiny_bert_dir):
    result = runner.invoke(app, ["fill-mask", "--model", str(tiny_mlm_dir), "Stocks [MASK] sharply.", "--top-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [c["token"] for c in payload["masks"][0]["candidates"]] == ["store", "market"]
    result = runner.invoke(app, ["fill-mask", "--model", str(tiny_mlm_dir), "Stocks [MASK] sharply.", "-k", "3"])
    assert result.exit_code == 0 and "store" in result.output
    assert "[unused1]" in result.output  # a vocabulary token that rich would otherwise read as markup

    result = runner.invoke(app, ["fill-mask", "--model", str(tiny_mlm_dir), "no mask here"])
    assert result.exit_code == 2 and "no [MASK]" in result.output
    # a checkpoint without an MLM head (like the bundled MiniLM) is refused, pointing at bertctl pretrain
    result = runner.invoke(app, ["fill-mask", "--model", str(tiny_bert_dir), "a [MASK]"])
    assert result.exit_code == 2
    assert "no masked-language-model head" in result.output and "bertctl pretrain" in result.output


def test_pretraining_bundled_minilm_has_no_mlm_head():
    from bertctl.errors import ModelError

    with pytest.raises(ModelError, match="no masked-language-model head"):
        load_masked_lm("sentence-transformers/all-MiniLM-L6-v2")


# ---------------------------------------------------------------------------------------------
# bertctl pretrain


def test_pretraining_cli_flags_are_validated_as_pretrain_keys(small_recipe, tmp_path):
    from bertctl.errors import RecipeError
    from bertctl.recipe import load_recipe

    result = runner.invoke(app, ["pretrain", str(small_recipe), "--mlm-probability", "1.5", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "pretrain.mlm_probability" in result.output and "must be < 1.0" in result.output
    result = runner.invoke(app, ["pretrain", str(small_recipe), "--data", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "y")])
    assert result.exit_code == 2 and "pretrain.data" in result.output and "not found" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(RecipeError, match="pretrain.heldout_fraction"):
        load_recipe(small_recipe, ["pretrain.heldout_fraction=0.9"])


@pytest.mark.slow
def test_pretraining_pretrain_lowers_heldout_loss_and_output_fine_tunes(small_recipe, tiny_bert_dir, tmp_path):
    from transformers import AutoModelForMaskedLM

    out = tmp_path / "mlm"
    result = runner.invoke(app, ["pretrain", str(small_recipe), "--epochs", "2", "-o", str(out), "train.log_every_steps=1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    before, after = metrics["heldout"]["before"], metrics["heldout"]["after"]
    assert before["masked_tokens"] == after["masked_tokens"] > 0  # same masks before and after
    assert after["mlm_loss"] < before["mlm_loss"] - 0.1
    assert metrics["fresh_mlm_head"] is True and metrics["global_steps"] > 0
    assert "held-out MLM loss" in result.output

    model, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not [k for k in info["missing_keys"] if k.startswith("cls.")]  # the trained head was saved
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    assert (out / "README.md").is_file() and (out / "train_log.jsonl").is_file()
    # BertForMaskedLM has no pooler: the base checkpoint's pooler is carried over for the classifier to use
    from transformers import AutoModelForSequenceClassification

    _, info = AutoModelForSequenceClassification.from_pretrained(out, num_labels=4, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]

    # a finished output dir is not overwritten silently
    again = runner.invoke(app, ["pretrain", str(small_recipe), "--epochs", "1", "-o", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output

    # a recipe can fine-tune a classifier from it
    fine_tune = tmp_path / "from_mlm.toml"
    recipe = small_recipe.read_text()
    assert f'name = "{tiny_bert_dir}"' in recipe
    fine_tune.write_text(
        recipe.replace(f'name = "{tiny_bert_dir}"', f'name = "{out}"').replace("epochs = 2", "epochs = 1")
        .replace(str(tmp_path / "runs" / "small"), str(tmp_path / "runs" / "from-mlm"))
    )
    trained = runner.invoke(app, ["train", str(fine_tune)])
    assert trained.exit_code == 0, trained.output
    run_metrics = json.loads((tmp_path / "runs" / "from-mlm" / "metrics.json").read_text())
    assert run_metrics["global_steps"] > 0


@pytest.mark.slow
def test_pretraining_resume_continues_to_the_same_result(small_recipe, tmp_path):
    from bertctl.loop import Interrupted
    from bertctl.pretraining import pretrain
    from bertctl.recipe import load_recipe

    # 144 training texts: 9 steps an epoch, 22 steps end inside epoch 3; the stops fall inside epochs 2 and 3.
    # One thread in every segment: float sums depend on the thread count, which the default picks from the load
    one = "train.num_threads=1"
    whole = tmp_path / "whole"
    result = runner.invoke(app, ["pretrain", str(small_recipe), one, "--max-steps", "22", "-o", str(whole)])
    assert result.exit_code == 0, result.output
    split = tmp_path / "split"
    recipe = load_recipe(small_recipe, [one, "pretrain.max_steps=22"])
    with pytest.raises(Interrupted) as stopped:
        pretrain(recipe, output_dir=split, progress=False, stop_after_steps=12)
    assert "bertctl pretrain" in stopped.value.fix and "pretrain.max_steps=22" in stopped.value.fix and "--resume" in stopped.value.fix
    assert not (split / "metrics.json").exists()
    changed = runner.invoke(app, ["pretrain", str(small_recipe), one, "--max-steps", "9", "-o", str(split), "--resume"])
    assert changed.exit_code == 2 and "pretrain.max_steps: saved 22, now 9" in changed.output
    with pytest.raises(Interrupted):
        pretrain(recipe, output_dir=split, resume=True, progress=False, stop_after_steps=20)
    resumed = runner.invoke(app, ["pretrain", str(small_recipe), one, "--max-steps", "22", "-o", str(split), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "from step-0000020" in resumed.output
    a = json.loads((whole / "metrics.json").read_text())
    b = json.loads((split / "metrics.json").read_text())
    assert b["heldout"]["before"] == a["heldout"]["before"]  # the baseline, scored again on resume, is the same
    assert b["heldout"]["after"]["mlm_loss"] == pytest.approx(a["heldout"]["after"]["mlm_loss"], abs=1e-9)
    assert b["heldout"]["after"]["mlm_accuracy"] == a["heldout"]["after"]["mlm_accuracy"]
    assert b["global_steps"] == a["global_steps"] == 22 and b["epochs_completed"] == a["epochs_completed"] == 2


@pytest.mark.slow
def test_pretraining_on_a_text_file_with_whole_word_masking(small_recipe, tmp_path):
    lines = [r["text"] for r in agnews_rows("train", 80)]
    text_file = tmp_path / "news.txt"
    text_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "wwm"
    result = runner.invoke(app, ["pretrain", str(small_recipe), "--data", str(text_file), "--whole-word-masking", "--max-steps", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["whole_word_masking"] is True and metrics["global_steps"] == 3
    assert metrics["train_examples"] + metrics["heldout_examples"] == 80
    csv_file = write_csv(tmp_path / "news.csv", [{"body": t} for t in lines])
    result = runner.invoke(app, ["pretrain", str(small_recipe), "--data", str(csv_file), "--max-steps", "1", "-o", str(tmp_path / "c")])
    assert result.exit_code == 2 and "body" in result.output


# ---------------------------------------------------------------------------------------------
# next-sentence prediction


def test_pretraining_split_sentences_keeps_abbreviations_and_quotes():
    assert split_sentences('He said "yes." Then U.S. stocks rose 3.5 percent. Oil fell! (Reuters) More.') == [
        'He said "yes."', "Then U.S. stocks rose 3.5 percent.", "Oil fell!", "(Reuters) More.",
    ]
    assert split_sentences("one sentence only") == ["one sentence only"]


def nsp_texts(n_multi: int = 300, n_single: int = 50) -> list[list[list[int]]]:
    """Texts as sentence-token lists whose ids say where they come from: text i, sentence j -> 1000*i + 10*j + k."""
    texts = []
    for i in range(n_multi + n_single):
        sentences = 1 if i >= n_multi else 2 + i % 4
        texts.append([[1000 * i + 10 * j + k for k in range(1 + (i + j) % 5)] for j in range(sentences)])
    return texts


def test_pretraining_nsp_pairs_are_half_real_half_random_with_segments():
    texts = nsp_texts()
    pairs = NextSentencePairs(texts, range(len(texts)), cls_id=-1, sep_id=-2, max_length=64)
    labels = []
    for i in range(len(texts)):
        for epoch in range(10):
            ids, types, label = pairs.build(i, torch.Generator().manual_seed(epoch * 100_003 + i))
            labels.append(label)
            assert len(ids) == len(types) <= 64 and ids[0] == -1 and ids[-1] == -2
            if len(texts[i]) == 1:  # one sentence: no NSP example, just [CLS] A [SEP]
                assert label == IGNORE_INDEX and ids.count(-2) == 1 and set(types) == {0}
                continue
            sep = ids.index(-2)
            first, second = ids[1:sep], ids[sep + 1 : -1]
            assert types == [0] * (sep + 1) + [1] * (len(second) + 1)
            assert first and second and {t // 1000 for t in first} == {i}
            owners = {t // 1000 for t in second}
            if label == 0:  # B continues A in the same text, from the next sentence on
                assert owners == {i} and second[0] % 1000 // 10 == first[-1] % 1000 // 10 + 1
            else:
                assert label == 1 and len(owners) == 1 and owners != {i}
    real = [label for label in labels if label != IGNORE_INDEX]
    assert len(real) == 3000
    assert abs(sum(1 for label in real if label == 0) / len(real) - 0.5) < 0.04  # 0.5 +- 4.4 sd


def test_pretraining_nsp_pairs_are_trimmed_to_max_length_and_depend_on_the_generator_only():
    texts = [[list(range(100, 160)), list(range(200, 240))], [list(range(300, 390)), [400, 401]], [[500, 501]]]
    pairs = NextSentencePairs(texts, [0, 1], cls_id=1, sep_id=2, max_length=32)
    for i in range(3):
        for seed in range(20):
            a = pairs.build(i, torch.Generator().manual_seed(seed))
            assert len(a[0]) <= 32 and a == pairs.build(i, torch.Generator().manual_seed(seed))


def test_pretraining_collator_builds_nsp_batches(tokenizer):
    texts = ["Stocks fell sharply. Oil rose again.", "The cup final is tonight. Fans queue early.", "No second sentence here"]
    ids = sentence_token_ids(tokenizer, texts)
    assert [len(s) for s in ids] == [2, 2, 1]
    pairs = NextSentencePairs(ids, [0, 1, 2], cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id, max_length=64)
    collator = MaskingCollator(tokenizer, seed=3, pairs=pairs)
    batch = collator([{"index": i} for i in range(3)])
    assert batch["next_sentence_label"].tolist()[2] == IGNORE_INDEX and set(batch["next_sentence_label"].tolist()[:2]) <= {0, 1}
    assert batch["token_type_ids"][0].max() == 1 and batch["token_type_ids"][2].max() == 0
    assert batch["input_ids"].shape == batch["labels"].shape
    again = collator([{"index": i} for i in range(3)])
    assert torch.equal(again["input_ids"], batch["input_ids"])  # same seed, epoch and index: same pairs and masks


@pytest.mark.slow
def test_pretraining_with_nsp_trains_both_heads_and_fine_tunes(small_recipe, tmp_path, monkeypatch):
    from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, BertForPreTraining

    import bertctl.loop
    from bertctl.recipe import load_recipe

    tuned = []  # the allocator setting runs for every task of the one loop (it once ran in train only)
    monkeypatch.setattr(bertctl.loop, "keep_freed_memory_in_process", lambda: tuned.append(True))

    rows = [r["text"] for r in agnews_rows("train", 200)]
    text_file = tmp_path / "news.txt"
    text_file.write_text("\n".join(f"{t} Second sentence {i} follows here." for i, t in enumerate(rows)) + "\n", encoding="utf-8")
    out = tmp_path / "nsp"
    result = runner.invoke(app, ["pretrain", str(small_recipe), "--data", str(text_file), "--nsp", "--max-steps", "6", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "NSP accuracy" in result.output and tuned == [True]
    assert load_recipe(out / "recipe.toml").pretrain.nsp is True  # the flag is a recipe key, saved with the run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["next_sentence_prediction"] is True and metrics["task"] == "masked-lm + next-sentence"
    before, after = metrics["heldout"]["before"], metrics["heldout"]["after"]
    assert before["nsp_pairs"] == after["nsp_pairs"] == metrics["heldout_examples"] == 20
    assert 0.0 <= after["nsp_accuracy"] <= 1.0 and after["mlm_loss"] < before["mlm_loss"]
    _, info = BertForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]  # MLM head, NSP head and pooler were all saved
    _, info = AutoModelForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not [k for k in info["missing_keys"] if k.startswith("cls.")]
    _, info = AutoModelForSequenceClassification.from_pretrained(out, num_labels=4, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight"]


def test_pretraining_nsp_refuses_text_without_sentence_boundaries(small_recipe, tmp_path):
    text_file = tmp_path / "short.txt"
    text_file.write_text("\n".join(f"headline number {i}" for i in range(50)) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["pretrain", str(small_recipe), "--data", str(text_file), "--nsp", "--max-steps", "1", "-o", str(tmp_path / "x")])
    assert result.exit_code == 2 and "two or more sentences" in result.output and "drop --nsp" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()


def test_pretraining_flag_overrides_set_only_the_given_keys_as_toml_values(small_recipe, tmp_path, monkeypatch):
    from bertctl.pretraining import flag_overrides
    from bertctl.recipe import load_recipe

    assert flag_overrides() == []  # no flag: the recipe's pretrain table stands, booleans included
    monkeypatch.chdir(tmp_path)
    (tmp_path / "news.txt").write_text('a "quoted" line\n', encoding="utf-8")
    overrides = flag_overrides(data="news.txt", text='hl "x"', epochs=2, mlm_probability=0.2, whole_word_masking=True, nsp=True)
    assert overrides == [
        f'pretrain.data={json.dumps(str(tmp_path / "news.txt"))}',  # relative to the working dir, not the recipe's folder
        'pretrain.text="hl \\"x\\""',
        "pretrain.epochs=2",
        "pretrain.mlm_probability=0.2",
        "pretrain.whole_word_masking=true",
        "pretrain.nsp=true",
    ]
    pretrain = load_recipe(small_recipe, overrides).pretrain  # every override parses back to the flag's value
    assert (pretrain.data, pretrain.text, pretrain.epochs, pretrain.mlm_probability) == (str(tmp_path / "news.txt"), 'hl "x"', 2, 0.2)
    assert pretrain.whole_word_masking is True and pretrain.nsp is True and pretrain.max_steps is None
