"""`bertctl doctor` against planted problems: label noise, leaks, and whether cleaning helps; plus the
near-duplicate search on 100k synthetic rows.

    python benchmarks/doctor_planted.py            # full: AG News 4,000 train / 1,000 dev, K=3 folds of MiniLM-L6 (~25 CPU-min)
    python benchmarks/doctor_planted.py --quick    # smoke run: 600 / 200 rows, 1 epoch everywhere (~4 CPU-min)
    python benchmarks/doctor_planted.py --parts leaks,scale   # no training: leaks and the 100k-row timing only

Parts (each on copies in a temp dir; the bundled files are only read):
  noise   flip 5% of the train labels to another class (seed --seed), run `bertctl doctor` with K=3 folds
          (each fold an ordinary bertctl training with recipes/agnews.toml's settings, --fold-epochs epochs),
          and score its flagged set (label_issues) against the flipped rows: precision, recall, precision at
          the number of flips (the top of the ranking); wall time of the label check and of the whole command
  clean   dev accuracy of `bertctl train` (--epochs, agnews.toml's settings) on the noisy train against the
          train that `doctor --fix` wrote (flagged rows and leaks dropped): does cleaning help?
  leaks   copy 50 dev rows into train as they are, 50 more with one small edit each (case, punctuation, one
          word changed; 17/17/16); recall of the exact check and of the near check per kind of copy, at several
          near thresholds; the pairs flagged on the clean files (the sample's own near copies, if any)
  scale   exact + near-duplicate search over --scale-rows synthetic rows (80% train, 10% validation, 10%
          test; random AG News words, 20-50 per text), with 1% planted copies: seconds and recall

Numbers on a shared 2-core machine move with its load (README "Caveats"); the load average is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import AGNEWS, AGNEWS_LABELS, AGNEWS_RECIPE, command_line, load_average, machine_summary, table  # noqa: E402

PARTS = ("noise", "clean", "leaks", "scale")


def read_rows(path: Path, n: int | None = None) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return rows[:n] if n else rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def agnews_recipe(train: Path, dev: Path, run_dir: Path, extra: list[str] = ()):
    from bertctl.recipe import load_recipe

    return load_recipe(AGNEWS_RECIPE, [f"data.train={json.dumps(str(train))}", f"data.validation={json.dumps(str(dev))}", "~data.validation_fraction", "~data.test", f"output.dir={json.dumps(str(run_dir))}", *extra])


def quiet(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------


def part_noise(tmp: Path, train: list[dict], dev: list[dict], args) -> dict:
    from bertctl.doctor import doctor

    rng = random.Random(args.seed)
    flips = sorted(rng.sample(range(len(train)), round(0.05 * len(train))))
    noisy = [dict(r) for r in train]
    for i in flips:
        noisy[i]["label"] = rng.choice([label for label in AGNEWS_LABELS if label != train[i]["label"]])
    (tmp / "noisy").mkdir()
    train_file = write_rows(tmp / "noisy" / "train.csv", noisy)
    dev_file = write_rows(tmp / "noisy" / "dev.csv", dev)
    recipe = agnews_recipe(train_file, dev_file, tmp / "runs" / "noisy")
    print(f"noise: {len(flips)} of {len(train)} train labels flipped (seed {args.seed}); doctor with K={args.folds}, {args.fold_epochs} epoch(s) per fold", file=sys.stderr)
    start = time.perf_counter()
    report = doctor(recipe, output=tmp / "doctor-noisy", fix=tmp / "cleaned", folds=args.folds, epochs=args.fold_epochs, say=quiet)
    wall = time.perf_counter() - start
    flagged = [issue["row"] for issue in report.label_issues]
    planted = set(flips)
    hits = len(set(flagged) & planted)
    top = flagged[: len(flips)]
    suggested_right = sum(1 for issue in report.label_issues if issue["row"] in planted and issue["suggested"] == train[issue["row"]]["label"])
    dropped = [issue["row"] for issue in report.label_issues if issue["confidence"] >= report.fix["drop_confidence"]]
    return {
        "rows": len(train), "flipped": len(flips), "flagged": len(flagged), "true_flags": hits,
        "precision": hits / len(flagged) if flagged else None, "recall": hits / len(flips),
        "precision_at_flips": len(set(top) & planted) / len(flips),
        "suggestion_restores_label": suggested_right / hits if hits else None,
        "fix_dropped": len(dropped), "fix_dropped_precision": len(set(dropped) & planted) / len(dropped) if dropped else None,
        "fix_dropped_recall": len(set(dropped) & planted) / len(flips),
        "out_of_fold_accuracy": report.label_check["out_of_fold_accuracy"],
        "label_check_s": report.timings["label_check_s"], "doctor_wall_s": round(wall, 1),
        "folds": args.folds, "fold_epochs": args.fold_epochs,
        "fix": {k: report.fix[k] for k in ("dropped", "files")}, "leaks_on_noisy": len(report.leaks),
        "_fixed_recipe": report.fix["recipe"], "_train_file": str(train_file), "_dev_file": str(dev_file),
    }


def part_clean(tmp: Path, noise: dict, args) -> dict:
    from bertctl.recipe import load_recipe
    from bertctl.training import train

    out = {}
    for name, recipe in (
        ("noisy", agnews_recipe(Path(noise["_train_file"]), Path(noise["_dev_file"]), tmp / "runs" / "train-noisy", [f"train.epochs={args.epochs}"])),
        ("cleaned", load_recipe(noise["_fixed_recipe"], [f"train.epochs={args.epochs}", f"output.dir={json.dumps(str(tmp / 'runs' / 'train-cleaned'))}"])),
    ):
        print(f"clean: training on the {name} train ({args.epochs} epoch(s))", file=sys.stderr)
        start = time.perf_counter()
        result = train(recipe, overwrite=True, progress=False)
        m = result.metrics
        out[name] = {
            "train_rows": m["train_examples"], "dev_accuracy_best": m["validation"]["accuracy"], "dev_accuracy_last": m["last_validation"]["accuracy"],
            "dev_f1_macro_best": m["validation"]["f1_macro"], "wall_s": round(time.perf_counter() - start, 1),
        }
        shutil.rmtree(result.run_dir, ignore_errors=True)
    out["gain_best"] = out["cleaned"]["dev_accuracy_best"] - out["noisy"]["dev_accuracy_best"]
    out["gain_last"] = out["cleaned"]["dev_accuracy_last"] - out["noisy"]["dev_accuracy_last"]
    return out


# ---------------------------------------------------------------------------------------------


def small_edit(text: str, kind: str, rng: random.Random) -> str:
    if kind == "case":
        return rng.choice([text.upper(), text.lower(), text.title()])
    if kind == "punctuation":
        edited = text.replace(",", "").replace(" - ", " -- ").rstrip(".") + "!"
        return edited if edited != text else text + " ."
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = rng.choice(["however", "reportedly", "yesterday", "officials", "analysts", "quickly"])
    return " ".join(words)


def leak_pairs(report, train_rows: dict[int, str]) -> dict[int, set[str]]:
    """Planted train row -> the checks (exact / near) that paired it with its dev row."""
    found: dict[int, set[str]] = {}
    for leak in report.leaks:
        earlier, later = leak["rows"]
        if earlier["split"] == "train" and later["split"] == "validation" and train_rows.get(earlier["row"]) == later["row"]:
            found.setdefault(earlier["row"], set()).add(leak["kind"])
    return found


def part_leaks(tmp: Path, train: list[dict], dev: list[dict], args) -> dict:
    from bertctl.doctor import diagnose

    rng = random.Random(args.seed + 1)
    picked = rng.sample(range(len(dev)), 100)
    kinds = ["verbatim"] * 50 + (["case"] * 17 + ["punctuation"] * 17 + ["word"] * 16)
    planted_train = [dict(r) for r in train]
    planted: dict[int, int] = {}  # train row -> dev row
    kind_of: dict[int, str] = {}
    for dev_index, kind in zip(picked, kinds):
        text = dev[dev_index]["text"] if kind == "verbatim" else small_edit(dev[dev_index]["text"], kind, rng)
        planted[len(planted_train)] = dev_index
        kind_of[len(planted_train)] = kind
        planted_train.append({"text": text, "label": dev[dev_index]["label"]})
    (tmp / "leaks").mkdir()
    clean_recipe = agnews_recipe(write_rows(tmp / "leaks" / "clean-train.csv", train), write_rows(tmp / "leaks" / "dev.csv", dev), tmp / "runs" / "leaks")
    leaky_recipe = agnews_recipe(write_rows(tmp / "leaks" / "train.csv", planted_train), tmp / "leaks" / "dev.csv", tmp / "runs" / "leaks")
    sweep = []
    clean_flags = []
    for threshold in sorted({0.6, 0.7, args.near_threshold, 0.9}):
        start = time.perf_counter()
        report = diagnose(leaky_recipe, folds=0, length=False, near_threshold=threshold, say=quiet)
        seconds = time.perf_counter() - start
        found = leak_pairs(report, planted)
        clean = diagnose(clean_recipe, folds=0, length=False, near_threshold=threshold, say=quiet)
        planted_refs = {("train", r) for r in planted}
        unplanted = [x for x in report.leaks if ("train", x["rows"][0]["row"]) not in planted_refs]
        row = {"near_threshold": threshold, "seconds": round(seconds, 2), "clean_pairs_flagged": len(clean.leaks),
               "other_pairs_flagged": len(unplanted) - len(clean.leaks)}
        for kind in ("verbatim", "case", "punctuation", "word"):
            rows_of_kind = [r for r, k in kind_of.items() if k == kind]
            row[f"{kind}_exact"] = sum("exact" in found.get(r, ()) for r in rows_of_kind) / len(rows_of_kind)
            row[f"{kind}_either"] = sum(bool(found.get(r)) for r in rows_of_kind) / len(rows_of_kind)
        edited = [r for r, k in kind_of.items() if k != "verbatim"]
        row["edited_exact"] = sum("exact" in found.get(r, ()) for r in edited) / len(edited)
        row["edited_near"] = sum("near" in found.get(r, ()) for r in edited) / len(edited)
        row["edited_either"] = sum(bool(found.get(r)) for r in edited) / len(edited)
        sweep.append(row)
        if threshold == args.near_threshold:
            clean_flags = [{"similarity": x["similarity"], "train": x["rows"][0]["where"], "dev": x["rows"][1]["where"], "text": x["rows"][1]["text"][:90]} for x in clean.leaks]
    return {"train_rows": len(train), "dev_rows": len(dev), "planted": {k: kinds.count(k) for k in dict.fromkeys(kinds)},
            "sweep": sweep, "clean_flags_at_default": clean_flags}


def part_scale(tmp: Path, train: list[dict], args) -> dict:
    from bertctl.doctor import diagnose

    rng = random.Random(args.seed + 2)
    words = [w for r in train for w in r["text"].split()]
    n = args.scale_rows
    sizes = {"train": int(n * 0.8), "validation": n // 10, "test": n - int(n * 0.8) - n // 10}
    splits = {name: [{"text": " ".join(rng.choices(words, k=rng.randint(20, 50))), "label": rng.choice(AGNEWS_LABELS)} for _ in range(size)] for name, size in sizes.items()}
    copies = []
    for name in ("validation", "test"):
        for j in rng.sample(range(sizes[name]), sizes[name] // 100):  # 1%: half verbatim, half one word changed
            text = splits[name][j]["text"]
            if len(copies) % 2:
                text = small_edit(text, "word", rng)
            copies.append((len(splits["train"]), name, j))
            splits["train"].append({"text": text, "label": splits[name][j]["label"]})
    (tmp / "scale").mkdir()
    paths = {name: write_rows(tmp / "scale" / f"{name}.csv", rows) for name, rows in splits.items()}
    recipe = agnews_recipe(paths["train"], paths["validation"], tmp / "runs" / "scale", [f"data.test={json.dumps(str(paths['test']))}"])
    start = time.perf_counter()
    report = diagnose(recipe, folds=0, length=False, say=quiet)
    wall = time.perf_counter() - start
    found = {(leak["rows"][0]["row"], leak["rows"][1]["split"], leak["rows"][1]["row"]) for leak in report.leaks}
    return {
        "rows": sum(len(r) for r in splits.values()), "planted_copies": len(copies), "found": sum(c in found for c in copies),
        "pairs_flagged": len(report.leaks), "load_and_exact_s": report.timings["load_and_exact_s"], "near_s": report.timings["near_s"], "wall_s": round(wall, 1),
    }


# ---------------------------------------------------------------------------------------------


def print_noise(r: dict) -> None:
    print(f"\n## planted label noise: {r['flipped']} of {r['rows']} AG News train labels flipped; K={r['folds']} folds x {r['fold_epochs']} epoch MiniLM-L6")
    print(table(["flagged", "true flags", "precision", "recall", "precision@flips", "suggestion = original", "dropped by --fix", "its precision", "its recall", "out-of-fold acc", "label check s", "doctor s"],
                [[r["flagged"], r["true_flags"], r["precision"], r["recall"], r["precision_at_flips"], r["suggestion_restores_label"], r["fix_dropped"], r["fix_dropped_precision"], r["fix_dropped_recall"],
                  r["out_of_fold_accuracy"], r["label_check_s"], r["doctor_wall_s"]]]), flush=True)


def print_clean(c: dict, args) -> None:
    print(f"\n## does cleaning help? dev accuracy after {args.epochs} epoch(s), agnews.toml's settings")
    print(table(["train", "rows", "dev acc (best epoch)", "dev acc (last)", "dev F1 macro", "train s"],
                [[name, c[name]["train_rows"], c[name]["dev_accuracy_best"], c[name]["dev_accuracy_last"], c[name]["dev_f1_macro_best"], c[name]["wall_s"]] for name in ("noisy", "cleaned")]))
    print(f"gain: {c['gain_best']:+.4f} (best epoch), {c['gain_last']:+.4f} (last epoch)", flush=True)


def print_leaks(lk: dict, args) -> None:
    print(f"\n## planted leaks: dev rows copied into train ({lk['train_rows']} train / {lk['dev_rows']} dev): recall per kind of copy")
    print(table(["near threshold", "verbatim (exact)", "case (exact)", "punct. (exact)", "word changed (near)", "edited, exact", "edited, either", "clean pairs flagged", "other flags", "s"],
                [[s["near_threshold"], s["verbatim_exact"], s["case_exact"], s["punctuation_exact"], s["word_either"], s["edited_exact"], s["edited_either"], s["clean_pairs_flagged"], s["other_pairs_flagged"], s["seconds"]] for s in lk["sweep"]]))
    for flag in lk["clean_flags_at_default"]:
        print(f"  clean sample, flagged at {args.near_threshold}: {flag['similarity']:.3f} train {flag['train']} ~ dev {flag['dev']}: {flag['text']}")
    sys.stdout.flush()


def print_scale(s: dict) -> None:
    print(f"\n## scale: {s['rows']:,} synthetic rows, {s['planted_copies']} planted copies (half with a word changed)")
    print(table(["rows", "found", "pairs flagged", "load + exact s", "near-dup search s", "total s"],
                [[f"{s['rows']:,}", f"{s['found']}/{s['planted_copies']}", s["pairs_flagged"], s["load_and_exact_s"], s["near_s"], s["wall_s"]]]), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="600 train / 200 dev rows, 1 epoch everywhere, 20k rows for scale")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (clean needs noise)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--fold-epochs", type=int, default=None, help="epochs of each fold's training (default 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the noisy/cleaned trainings (default: agnews.toml's 2; --quick 1)")
    parser.add_argument("--near-threshold", type=float, default=0.8)
    parser.add_argument("--scale-rows", type=int, default=None, help="rows for the scale part (default 100,000; --quick 20,000)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if "clean" in parts and "noise" not in parts:
        parser.error("clean trains on the train that noise's --fix writes: add noise")
    args.fold_epochs = args.fold_epochs or 1
    args.epochs = args.epochs or (1 if args.quick else 2)
    args.scale_rows = args.scale_rows or (20_000 if args.quick else 100_000)
    train = read_rows(AGNEWS / "train.csv", 600 if args.quick else None)
    dev = read_rows(AGNEWS / "dev.csv", 200 if args.quick else None)

    machine = machine_summary()
    print(f"# {command_line()}\n# {machine['cpu']}, {machine['cpus']} CPUs, torch {machine['torch']}, load {load_average()}", flush=True)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="doctor-bench-") as workdir:
        tmp = Path(workdir)
        # cheap parts first, and each part's table printed once it is done: a long run cut short keeps its numbers
        if "leaks" in parts:
            results["leaks"] = part_leaks(tmp, train, dev, args)
            print_leaks(results["leaks"], args)
        if "scale" in parts:
            results["scale"] = part_scale(tmp, train, args)
            print_scale(results["scale"])
        if "noise" in parts:
            results["noise"] = part_noise(tmp, train, dev, args)
            print_noise(results["noise"])
        if "clean" in parts:
            results["clean"] = part_clean(tmp, results["noise"], args)
            print_clean(results["clean"], args)
    clean_results = {k: ({kk: vv for kk, vv in v.items() if not kk.startswith("_")} if isinstance(v, dict) else v) for k, v in results.items()}
    print(json.dumps({"benchmark": "doctor_planted", "command": command_line(), "machine": machine, "quick": args.quick, **clean_results}, default=str))


if __name__ == "__main__":
    main()
