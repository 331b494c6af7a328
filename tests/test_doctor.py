"""bertctl doctor: planted leaks, duplicates, conflicts, imbalance and label errors must be found (with the file
lines a person opens), a clean sample must pass, bad input exits 2, --fix leaves the originals alone.

The fast tests run --folds 0 (no training) and test confident learning on given probabilities; the slow one runs
the whole command with K=2 trainings of a tiny BERT.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.doctor import normalize_text, rank_label_issues
from bertctl.recipe import load_recipe
from tests.conftest import AGNEWS_LABELS, agnews_rows, write_csv

ROW_KEYS = {"split", "file", "line", "where", "row", "text", "label"}


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def write_recipe(folder: Path, tokenizer_dir: Path, extra: str = "", *, test: bool = False) -> Path:
    recipe = folder / "doc.toml"
    recipe.write_text(
        f"""[model]
name = "{tokenizer_dir}"
max_length = 64
[data]
train = "train.csv"
validation = "dev.csv"
{'test = "test.csv"' if test else ''}
labels = {json.dumps(AGNEWS_LABELS)}
{extra}
[output]
dir = "{folder / 'runs' / 'doc'}"
""",
        encoding="utf-8",
    )
    return recipe


def doctor_json(folder: Path) -> dict:
    return json.loads((folder / "runs" / "doc-doctor" / "doctor.json").read_text(encoding="utf-8"))


def line_of(index: int) -> int:
    return index + 2  # the header is line 1, and these texts hold no newlines


def change_one_word(text: str) -> str:
    words = text.split()
    middle = len(words) // 2
    words[middle] = "zebras" if words[middle].lower() != "zebras" else "lions"
    return " ".join(words)


@pytest.fixture
def planted(tmp_path, bundled_tokenizer_dir):
    """120 AG News train rows and 40 dev rows (clean among themselves), plus one of each planted problem."""
    train = agnews_rows("train", 120)
    dev = agnews_rows("dev", 40)
    test = agnews_rows("dev", 60)[40:]
    # imbalance: keep only 3 Sports rows in train (dev still has its Sports rows)
    sports = [i for i, r in enumerate(train) if r["label"] == "Sports"]
    train = [r for i, r in enumerate(train) if r["label"] != "Sports" or i in sports[:3]]
    planted = {}
    planted["exact"] = len(train)
    train.append({"text": "  " + dev[0]["text"].upper().replace(",", " ;") + "!!", "label": dev[0]["label"]})
    long_dev = next(i for i, r in enumerate(dev) if len(r["text"].split()) >= 30)
    planted["near_dev"] = long_dev
    planted["near"] = len(train)
    train.append({"text": change_one_word(dev[long_dev]["text"]), "label": dev[long_dev]["label"]})
    planted["dup_of"] = 5
    planted["dup"] = len(train)
    train.append(dict(train[5]))
    planted["conflict_of"] = 7
    planted["conflict"] = len(train)
    train.append({"text": train[7]["text"], "label": next(label for label in AGNEWS_LABELS if label not in (train[7]["label"], "Sports"))})
    test.append(dict(dev[2]))  # an exact validation~test leak
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "dev.csv", dev)
    write_csv(tmp_path / "test.csv", test)
    recipe = write_recipe(tmp_path, bundled_tokenizer_dir, test=True)
    return tmp_path, recipe, planted, train, dev, test


def test_doctor_normalize_text_folds_case_space_punctuation_and_unicode():
    assert normalize_text("  Stocks FELL,   oil rose! ") == normalize_text("stocks fell oil rose")
    assert normalize_text("ＳＴＯＣＫＳ ﬁnance") == "stocks finance"  # NFKC: full-width letters, the fi ligature
    assert normalize_text("e\u0301t\u00e9") == normalize_text("\u00e9t\u00e9")  # combining accent = precomposed
    assert normalize_text("Nortel to cut 3,500 jobs, U.S. says") == normalize_text("nortel to cut 3500 jobs US says")
    assert normalize_text("It's US-led") == normalize_text("its us led")
    assert normalize_text("stocks fell") != normalize_text("stocks rose")
    assert normalize_text("!!!") != normalize_text("???")  # all punctuation: the characters are the text


def test_doctor_finds_planted_problems(planted):
    folder, recipe, p, train, dev, test = planted
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 1, result.output
    assert "bertctl doctor found 2 exact and 1 near-duplicate leaks across splits; 1 texts with conflicting labels" in result.stderr
    report = doctor_json(folder)

    exact = [x for x in report["leaks"] if x["kind"] == "exact"]
    pairs = {(a["split"], a["line"], b["split"], b["line"]) for a, b in (x["rows"] for x in exact)}
    assert pairs == {("train", line_of(p["exact"]), "validation", line_of(0)), ("validation", line_of(2), "test", line_of(len(test) - 1))}
    assert all(x["similarity"] == 1.0 for x in exact)

    near = [x for x in report["leaks"] if x["kind"] == "near"]
    assert len(near) == 1
    a, b = near[0]["rows"]
    assert (a["split"], a["line"], b["split"], b["line"]) == ("train", line_of(p["near"]), "validation", line_of(p["near_dev"]))
    assert 0.8 <= near[0]["similarity"] < 1.0
    assert b["text"] == dev[p["near_dev"]]["text"] and a["text"] == train[p["near"]]["text"]

    assert len(report["duplicates"]) == 2  # the planted copy, and the conflicting copy (a duplicate text too)
    dup = next(d for d in report["duplicates"] if {r["line"] for r in d["rows"]} == {line_of(p["dup_of"]), line_of(p["dup"])})
    assert dup["split"] == "train"

    assert len(report["conflicts"]) == 1
    conflict = report["conflicts"][0]
    assert {r["line"] for r in conflict["rows"]} == {line_of(p["conflict_of"]), line_of(p["conflict"])}
    assert conflict["labels"] == {train[p["conflict_of"]]["label"]: 1, train[p["conflict"]]["label"]: 1}

    balance = report["balance"]
    assert balance["counts"]["train"]["Sports"] == 3
    assert {"split": "train", "label": "Sports", "count": 3} in balance["under_min_count"]
    assert any(r["label"] == "Sports" and r["split"] == "validation" and r["train"] == 3 for r in balance["rare_in_train"])
    assert "train" in balance["imbalanced"] and balance["imbalance_ratio"]["train"] >= 10
    assert report["summary"]["serious"] is True
    # the terminal summary names the rows
    assert f"train line {line_of(p['exact'])}" in result.stdout and "validation line 2" in result.stdout


def test_doctor_clean_sample_passes(tmp_path, bundled_tokenizer_dir):
    write_csv(tmp_path / "train.csv", agnews_rows("train", 160))
    write_csv(tmp_path / "dev.csv", agnews_rows("dev", 60))
    recipe = write_recipe(tmp_path, bundled_tokenizer_dir)
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 0, result.output
    report = doctor_json(tmp_path)
    assert report["leaks"] == [] and report["conflicts"] == [] and report["duplicates"] == []
    assert report["summary"]["serious"] is False
    assert (tmp_path / "runs" / "doc-doctor" / "doctor.html").is_file()
    assert (tmp_path / "runs" / "doc-doctor" / "balance.png").is_file()


def test_doctor_json_schema(planted):
    folder, recipe, *_ = planted
    result = invoke("doctor", recipe, "--folds", "0", "--json")
    assert result.exit_code == 1
    printed = json.loads(result.stdout)  # --json: only JSON on stdout
    report = doctor_json(folder)
    assert printed == report
    for key in ("leaks", "duplicates", "conflicts", "balance", "length", "label_issues", "summary", "splits", "labels"):
        assert key in report
    for leak in report["leaks"]:
        assert set(leak) == {"kind", "similarity", "rows"} and leak["kind"] in {"exact", "near"}
        assert len(leak["rows"]) == 2 and all(set(r) == ROW_KEYS for r in leak["rows"])
    for group in report["duplicates"] + report["conflicts"]:
        assert all(set(r) == ROW_KEYS for r in group["rows"])
    length = report["length"]
    assert length["max_length"] == 64 and set(length["splits"]) == {"train", "validation", "test"}
    assert {"p50", "p90", "p99", "max", "truncated_share"} <= set(length["splits"]["train"])
    assert report["label_issues"] == [] and report["label_check"]["skipped"] == "--folds 0"
    html = (folder / "runs" / "doc-doctor" / "doctor.html").read_text(encoding="utf-8")
    assert "Leaks across splits" in html and "lengths.png" in html


@pytest.mark.slow
def test_doctor_fix_writes_cleaned_copies_and_leaves_originals(planted):
    folder, recipe, p, train, dev, test = planted
    originals = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("train.csv", "dev.csv", "test.csv")}
    fixed = folder / "cleaned"
    result = invoke("doctor", recipe, "--folds", "0", "--fix", fixed)
    assert result.exit_code == 1, result.output
    assert {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in originals} == originals
    cleaned = list(csv.DictReader(open(fixed / "train.csv", encoding="utf-8")))
    # dropped: the exact and near copies of dev rows, the second copy of the duplicate, both conflicting rows
    dropped = {p["exact"], p["near"], p["dup"], p["conflict_of"], p["conflict"]}
    assert [r["text"] for r in cleaned] == [r["text"] for i, r in enumerate(train) if i not in dropped]
    assert len(list(csv.DictReader(open(fixed / "dev.csv", encoding="utf-8")))) == len(dev) - 1  # dev~test leak: dev's copy goes
    assert len(list(csv.DictReader(open(fixed / "test.csv", encoding="utf-8")))) == len(test)
    review = list(csv.DictReader(open(fixed / "review.csv", encoding="utf-8")))
    assert len(review) == len(dropped) + 1
    assert any(r["where"] == f"line {line_of(p['conflict'])}" and "conflicting labels" in r["reason"] for r in review)
    assert all(r["action"] == "dropped" for r in review)
    cleaned_recipe = load_recipe(fixed / "doc-fixed.toml")
    assert cleaned_recipe.data_path("train").resolve() == (fixed / "train.csv").resolve()
    assert str(cleaned_recipe.run_dir).endswith("doc-fixed")
    again = invoke("doctor", fixed / "doc-fixed.toml", "--folds", "0", "--output", folder / "again")
    assert again.exit_code == 0, again.output
    assert json.loads((folder / "again" / "doctor.json").read_text())["leaks"] == []


@pytest.mark.slow
def test_doctor_bad_input_exits_2(planted, tmp_path):
    folder, recipe, *_ = planted
    result = invoke("doctor", folder / "missing.toml")
    assert result.exit_code == 2 and "not found" in result.stderr
    result = invoke("doctor", recipe, "--folds", "1")
    assert result.exit_code == 2 and "at least 2 folds" in result.stderr
    result = invoke("doctor", recipe, "--folds", "0", "--near-threshold", "1.5")
    assert result.exit_code == 2 and "--near-threshold 1.5" in result.stderr
    result = invoke("doctor", recipe, "--folds", "0", "--fix", folder)
    assert result.exit_code == 2 and f"holds {folder / 'train.csv'}, which doctor only reads" in result.stderr and "fix:" in result.stderr
    result = invoke("doctor", recipe, "--folds", "0", "--output", folder.parent, "--overwrite")  # never replaces the data's folder
    assert result.exit_code == 2 and "which doctor only reads" in result.stderr
    (folder / "notes").mkdir()
    (folder / "notes" / "mine.txt").write_text("keep me", encoding="utf-8")
    result = invoke("doctor", recipe, "--folds", "0", "--fix", folder / "notes", "--overwrite")
    assert result.exit_code == 2 and "not an earlier doctor output" in result.stderr
    assert (folder / "notes" / "mine.txt").read_text(encoding="utf-8") == "keep me"
    assert not (folder / "runs").exists() and sorted(p.name for p in folder.iterdir()) == ["dev.csv", "doc.toml", "notes", "test.csv", "train.csv"]  # refused: nothing written
    # an existing report is never replaced silently
    assert invoke("doctor", recipe, "--folds", "0").exit_code == 1
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 2 and "--overwrite" in result.stderr
    assert invoke("doctor", recipe, "--folds", "0", "--overwrite").exit_code == 1
    (folder / "train.csv").write_text("text,label\n", encoding="utf-8")
    result = invoke("doctor", recipe, "--folds", "0", "--overwrite")
    assert result.exit_code == 2 and "no rows" in result.stderr


def test_doctor_missing_extra_names_the_install(monkeypatch, planted):
    import importlib.util

    folder, recipe, *_ = planted
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "datasketch" else real(name, *a))
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 2
    assert "needs datasketch" in result.stderr and 'pip install -e ".[doctor]"' in result.stderr


def test_doctor_folds_0_runs_without_cleanlab(monkeypatch, planted):
    # issue 28: --folds 0 trains nothing, so it must not need cleanlab; the label-error check still asks for it
    folder, recipe, *_ = planted
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # `import cleanlab` fails, as when it is not installed
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 1, result.output  # the planted leaks, found without cleanlab
    assert doctor_json(folder)["summary"]["leaks_exact"] == 2
    result = invoke("doctor", recipe, "--folds", "2", "--output", folder / "other")
    assert result.exit_code == 2 and "needs cleanlab" in result.stderr and 'pip install -e ".[doctor]"' in result.stderr


@pytest.mark.parametrize("drop_empty", [False, True])
def test_doctor_lists_rows_without_a_text_or_label_with_their_lines(tmp_path, bundled_tokenizer_dir, drop_empty):
    # issue 28: an empty text stopped doctor with exit 2 (no report), and with drop_empty it appeared nowhere
    train = agnews_rows("train", 60)
    train[3]["text"] = "  "
    train[7]["label"] = "NaN"
    train[9]["label"] = ""
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "dev.csv", agnews_rows("dev", 20))
    recipe = write_recipe(tmp_path, bundled_tokenizer_dir, "drop_empty = true\n" if drop_empty else "")
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 0, result.output
    report = doctor_json(tmp_path)
    found = [(e["split"], e["line"], e["why"]) for e in report["empty"]]
    assert found == [("train", line_of(3), "empty text"), ("train", line_of(7), "empty label"), ("train", line_of(9), "empty label")]
    assert report["empty"][1]["text"] == train[7]["text"] and report["empty"][1]["label"] == "NaN"
    assert all(e["training"].startswith("dropped" if drop_empty else "refused") for e in report["empty"])
    assert report["summary"]["empty_rows"] == 3 and report["splits"]["train"]["rows"] == 57
    assert f"train line {line_of(3)} (empty text)" in " ".join(result.stdout.split())
    html = (tmp_path / "runs" / "doc-doctor" / "doctor.html").read_text(encoding="utf-8")
    assert "Rows without a text or label" in html and f"train line {line_of(7)}" in html


def test_doctor_html_shows_text_not_python_reprs(planted):
    folder, recipe, *_ = planted
    invoke("doctor", recipe, "--folds", "0")
    html = (folder / "runs" / "doc-doctor" / "doctor.html").read_text(encoding="utf-8")
    assert "{&#x27;" not in html and "[&#x27;" not in html and ">True<" not in html and ">None<" not in html, html
    assert "<td>serious</td><td>yes</td>" in html and "exact: validation~train: 1" in html


def test_doctor_output_is_readable_by_other_users(planted):
    import os
    import stat

    folder, recipe, *_ = planted
    old = os.umask(0o022)
    try:
        assert invoke("doctor", recipe, "--folds", "0").exit_code == 1
    finally:
        os.umask(old)
    out = folder / "runs" / "doc-doctor"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [out, *out.iterdir()]}
    assert {"doctor.json", "doctor.html", "balance.png"} <= set(modes)
    assert modes == {name: 0o755 if name == out.name else 0o644 for name in modes}, {k: oct(v) for k, v in modes.items()}


def test_doctor_lines_survive_dropped_empty_rows_and_limits(tmp_path, bundled_tokenizer_dir):
    train = agnews_rows("train", 60)
    dev = agnews_rows("dev", 20)
    train[3]["text"] = "   "  # dropped by data.drop_empty: later rows keep their own lines
    train[10]["text"] = ""
    train.append(dict(dev[4]))
    write_csv(tmp_path / "train.csv", train)
    write_csv(tmp_path / "dev.csv", dev)
    # a sample limit does not narrow the checks: the leak is in the file, whatever a sample draws
    recipe = write_recipe(tmp_path, bundled_tokenizer_dir, "drop_empty = true\n[data.limit]\ntrain = 10\n")
    result = invoke("doctor", recipe, "--folds", "0")
    assert result.exit_code == 1, result.output
    (leak,) = doctor_json(tmp_path)["leaks"]
    assert (leak["rows"][0]["line"], leak["rows"][0]["row"]) == (line_of(len(train) - 1), len(train) - 1)
    assert leak["rows"][1]["line"] == line_of(4)
    assert doctor_json(tmp_path)["splits"]["train"]["rows"] == len(train) - 2


@pytest.mark.slow
def test_doctor_pair_recipes_compare_the_pair(tmp_path, bundled_tokenizer_dir):
    rows = [{"a": f"sentence number {i} about markets", "b": f"another sentence {i} about sport", "label": "x" if i % 2 else "y"} for i in range(30)]
    dev = [{"a": rows[0]["a"], "b": "a different second text entirely", "label": "y"}, {"a": rows[1]["a"].upper(), "b": rows[1]["b"] + ".", "label": "x"}]
    write_csv(tmp_path / "train.csv", rows)
    write_csv(tmp_path / "dev.csv", dev)
    recipe = tmp_path / "pairs.toml"
    recipe.write_text(f'[model]\nname = "{bundled_tokenizer_dir}"\n[data]\ntrain = "train.csv"\nvalidation = "dev.csv"\ntext = "a"\ntext_pair = "b"\n[output]\ndir = "{tmp_path / "runs" / "pairs"}"\n', encoding="utf-8")
    result = invoke("doctor", recipe, "--folds", "0", "--near-threshold", "0.95")
    assert result.exit_code == 1, result.output
    report = json.loads((tmp_path / "runs" / "pairs-doctor" / "doctor.json").read_text())
    # the same first text with another second text is not a leak; the same pair, recased and punctuated, is
    assert [(x["kind"], x["rows"][0]["line"], x["rows"][1]["line"]) for x in report["leaks"]] == [("exact", 3, 3)]
    assert report["leaks"][0]["rows"][1]["text_pair"] == dev[1]["b"]


def test_doctor_confident_learning_flags_planted_flips():
    rng = np.random.default_rng(0)
    n, k = 400, 4
    truth = rng.integers(0, k, n)
    probs = rng.dirichlet(np.ones(k) * 0.3, n) * 0.3
    probs[np.arange(n), truth] += 0.7  # a decent model: the true class gets most of the mass
    probs /= probs.sum(axis=1, keepdims=True)
    flips = rng.choice(n, 20, replace=False)
    given = truth.copy()
    given[flips] = (truth[flips] + rng.integers(1, k, 20)) % k
    issues = rank_label_issues(given, probs)
    flagged = [i["index"] for i in issues]
    found = set(flagged) & set(flips)
    assert len(found) >= 15  # cleanlab estimates how many to prune per class pair: here 17 of the 20
    assert len(found) >= 0.9 * len(flagged)  # few false alarms
    quality = [i["label_quality"] for i in issues]
    assert quality == sorted(quality)  # most likely wrong first
    for issue in issues:
        if issue["index"] in found:
            assert issue["suggested"] == truth[issue["index"]] and issue["given"] == given[issue["index"]]
            assert issue["confidence"] == pytest.approx(probs[issue["index"], truth[issue["index"]]], abs=1e-4)


def test_doctor_confident_learning_with_a_class_absent_from_the_sample():
    # cleanlab wants every class 0..K-1 among the labels; a sample (data.limit.train) may lack one
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 200)  # class 3 of 4 never given, and the models never learnt it
    probs = np.full((200, 4), 0.01)
    probs[np.arange(200), truth] = 0.97
    given = truth.copy()
    given[:6] = (truth[:6] + 1) % 3
    issues = rank_label_issues(given, probs)
    assert {i["index"] for i in issues} == set(range(6))
    assert all(i["suggested"] == truth[i["index"]] for i in issues)


# ---------------------------------------------------------------------------------------------
# the whole command with K=2 real trainings

TOPICS = {
    "World": "president minister election war troops government police peace capital rebels talks army border vote".split(),
    "Sports": "goal match team coach league season player score win cup race ball game stadium final".split(),
    "Business": "stocks market shares bank profit sales price oil company deal trade economy investor growth tax".split(),
    "Sci/Tech": "software computer internet space nasa research scientists data chip phone web planet study technology virus".split(),
}
FILLER = "the a of in on and to for with after new said".split()


@pytest.fixture(scope="module")
def keyword_bert_dir(tmp_path_factory) -> Path:
    """A tiny random BERT whose WordPiece vocab is just the words of TOPICS and FILLER: with the full 30k vocab,
    AdamW over the embedding table would take most of each step's time."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *[w for ws in TOPICS.values() for w in ws], *FILLER]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    out = tmp_path_factory.mktemp("keyword-bert")
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
def test_doctor_end_to_end_finds_planted_label_flips(tmp_path, keyword_bert_dir):
    rng = random.Random(0)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(60):
            text = rng.sample(words, 5) + rng.sample(FILLER, 3)
            rng.shuffle(text)
            rows.append({"text": " ".join(text), "label": label})
    rng.shuffle(rows)
    flips = rng.sample(range(len(rows)), 12)  # 5% of the labels
    truth = {i: rows[i]["label"] for i in flips}
    for i in flips:
        rows[i]["label"] = rng.choice([label for label in TOPICS if label != truth[i]])
    write_csv(tmp_path / "train.csv", rows)
    recipe = tmp_path / "keywords.toml"
    recipe.write_text(
        f'[model]\nname = "{keyword_bert_dir}"\nmax_length = 32\n[data]\ntrain = "train.csv"\nlabels = {json.dumps(AGNEWS_LABELS)}\n'
        f"[train]\nepochs = 12\nbatch_size = 16\nlearning_rate = 3e-3\nseed = 7\n[output]\ndir = \"{tmp_path / 'runs' / 'keywords'}\"\n",
        encoding="utf-8",
    )
    result = invoke("doctor", recipe, "--folds", "2", "--fix", tmp_path / "cleaned")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "runs" / "keywords-doctor" / "doctor.json").read_text())
    assert report["label_check"]["folds"] == 2 and report["label_check"]["examples"] == len(rows)
    flagged = [issue["row"] for issue in report["label_issues"]]
    found = set(flagged) & set(flips)
    assert len(found) >= 8, (flagged, flips)  # recall >= 2/3
    assert len(found) >= 0.7 * len(flagged), (flagged, flips)  # precision >= 0.7
    for issue in report["label_issues"][:5]:  # the most likely ones are planted flips, and the suggestion undoes them
        assert issue["row"] in truth and issue["suggested"] == truth[issue["row"]]
        assert issue["line"] == issue["row"] + 2 and issue["given"] == rows[issue["row"]]["label"]
    assert (tmp_path / "runs" / "keywords-doctor" / "label_issues.png").is_file()
    # --fix drops the suspects whose suggested label got >= 0.5 out of fold, and lists the others for review
    confident = {i["row"] for i in report["label_issues"] if i["confidence"] >= 0.5}
    cleaned = list(csv.DictReader(open(tmp_path / "cleaned" / "train.csv", encoding="utf-8")))
    assert [r["text"] for r in cleaned] == [r["text"] for i, r in enumerate(rows) if i not in confident]
    review = list(csv.DictReader(open(tmp_path / "cleaned" / "review.csv", encoding="utf-8")))
    assert {int(r["row"]): r["action"] for r in review} == {i: "dropped" if i in confident else "review" for i in flagged}
