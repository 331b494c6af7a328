"""Distil a finished run (the teacher) into a smaller student: the classification task, with the teacher's outputs
as a second target.

    result = distill(load_recipe("recipes/agnews.toml", ["distill.num_layers=3"]), teacher="runs/agnews")
    bertctl distill recipes/agnews.toml --teacher runs/agnews distill.num_layers=3

The student is the teacher keeping some encoder layers (`distill.layers`, or `distill.num_layers` evenly spaced
from the first, as DistilBERT keeps every other layer of BERT-base), embeddings and head copied; or, with neither
key, the recipe's `model.name`, a smaller BERT that must share the teacher's tokenizer. The transfer set is the
training split plus, optionally, unlabelled texts (`distill.unlabeled`). The teacher scores it once through the
inference path (its run dir, or its ONNX export with `distill.teacher_export`), and the scores are cached by
content, like the tokenize cache, so a resume reads the same targets. Then the loop of `bertctl train` runs as it
is: checkpoints, exact resume, the best model by validation, a run dir that eval, predict, export, serve and
`pipeline()` take unchanged. The loss per example is

    alpha x (the problem type's teacher term) + (1 - alpha) x (the label loss, class weights included),

where the label loss counts only examples with a label, and the teacher term is the ProblemType's `distill_loss`:
KL at temperature T times T^2 (single-label), BCE against the teacher's sigmoids (multi-label), MSE against the
teacher's values (regression).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from bertctl.cache import cache_root
from bertctl.data import hash_file, load_data, tokenize_batch
from bertctl.errors import BertctlError, DataError, RunError
from bertctl.inputs import cell_text, is_blank, read_table, require_columns, rows_named
from bertctl.loop import RunResult, run_loop
from bertctl.inference import load_for_inference, logits
from bertctl.inference.onnx import is_export_dir
from bertctl.modeling import labels_of, load_classifier, load_tokenizer, model_config
from bertctl.problems import problem_of, problem_type
from bertctl.progress import Progress
from bertctl.recipe import Recipe
from bertctl.runs import FINISHED_MARKER, umask_modes
from bertctl.training import Classification, model_card

TEACHER_CACHE_VERSION = 1
SCORING_CHUNK = 512  # texts per progress update while the teacher scores


def student_layers(recipe: Recipe, teacher_layers: int) -> list[int] | None:
    """The teacher's encoder layers the student keeps, or None when the student is model.name."""
    settings = recipe.distill
    if settings.layers is not None:
        if (too_high := [i for i in settings.layers if i >= teacher_layers]):
            raise BertctlError(
                f"{recipe.source}: distill.layers {settings.layers} names layer {too_high[0]}, but the teacher has {teacher_layers} encoder layers (0 to {teacher_layers - 1})",
                fix=f"keep layers between 0 and {teacher_layers - 1}, e.g. distill.layers = {list(range(0, teacher_layers, 2))}",
            )
        return list(settings.layers)
    if settings.num_layers is not None:
        if settings.num_layers > teacher_layers:
            raise BertctlError(
                f"{recipe.source}: distill.num_layers is {settings.num_layers}, but the teacher has {teacher_layers} encoder layers",
                fix=f"keep at most {teacher_layers} (half, as DistilBERT: distill.num_layers = {max(1, teacher_layers // 2)})",
            )
        # from the first layer at an even stride: 3 of 6 -> 0, 2, 4; 6 of 12 -> 0, 2, ..., 10 (DistilBERT)
        return [i * teacher_layers // settings.num_layers for i in range(settings.num_layers)]
    return None


def find_teacher(recipe: Recipe, teacher: str | Path | None) -> Path:
    """The teacher's run dir, checked to be a finished classifier run: --teacher, else distill.teacher."""
    named = str(teacher) if teacher is not None else recipe.distill.teacher
    if named is None:
        raise BertctlError(f"{recipe.source}: no teacher to distil from", fix="pass --teacher RUN_DIR, or set distill.teacher = \"runs/NAME\" in the recipe")
    where = recipe.local_dir(named) if teacher is None else (Path(teacher).expanduser() if Path(teacher).expanduser().is_dir() else None)
    if where is None:
        exists = Path(named).expanduser().exists()
        raise BertctlError(
            f"teacher {named}: {'is a file, not a run dir' if exists else 'no such directory'}"
            + ("" if teacher is not None or exists else f" (looked in the working dir and in {recipe.base_dir_path})"),
            fix="name the run dir of a finished `bertctl train` (e.g. --teacher runs/agnews)",
        )
    if is_export_dir(where):
        raise BertctlError(
            f"teacher {where} is an ONNX export: the student is built from the teacher's torch weights",
            fix=f"name the run dir it was exported from as the teacher, and this export as distill.teacher_export = \"{where}\"",
        )
    if not (where / "config.json").is_file() or not (where / FINISHED_MARKER).is_file():
        missing = "config.json" if not (where / "config.json").is_file() else FINISHED_MARKER
        raise BertctlError(
            f"teacher {where} is not a finished bertctl run dir (no {missing})",
            fix="train the teacher to the end first (bertctl train RECIPE, or --resume an interrupted one), then name its run dir",
        )
    return where.resolve()


def check_teacher_fits(recipe: Recipe, teacher: Path, teacher_config, labels: list[str]) -> None:
    """The teacher must answer the recipe's question: the same problem type, and the same labels in the same order."""
    theirs, ours = problem_of(teacher_config), problem_type(recipe.model.problem_type)
    if theirs != ours:
        raise BertctlError(
            f"teacher {teacher} is a {theirs.title} model, and {recipe.source} trains {ours.title}",
            fix="distil with the recipe the teacher was trained on (its copy: TEACHER/recipe.toml), or train a teacher for this recipe",
        )
    names = labels_of(teacher_config)
    if ours.has_classes and names != labels:
        raise BertctlError(
            f"teacher {teacher} has the labels {names}, and {recipe.source} has {labels}: the student would learn the teacher's scores under the wrong names",
            fix="use the teacher's recipe (TEACHER/recipe.toml), or list the labels in the teacher's order: data.labels = " + json.dumps(names),
        )


def _normalizer(tokenizer) -> Any:
    """How a tokenizer cleans text before it splits it (case, accents), comparable between two tokenizers."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return json.loads(backend.to_str()).get("normalizer") if backend is not None else getattr(tokenizer, "do_lower_case", None)


def check_same_tokenizer(student_name: str, student_tokenizer, teacher: Path, teacher_tokenizer) -> None:
    """A student with another tokenizer would read other ids for the same text than the teacher was scored on."""
    ours, theirs = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
    if ours != theirs or _normalizer(student_tokenizer) != _normalizer(teacher_tokenizer):
        differs = f"{len(ours)} against {len(theirs)} tokens" if len(ours) != len(theirs) else ("other ids for the same tokens" if ours != theirs else "another text normalisation (case or accents)")
        raise BertctlError(
            f"model.name {student_name} has another tokenizer than teacher {teacher} ({differs}): the teacher's scores would be for other inputs",
            fix="pick a student BERT with the teacher's vocabulary, or build the student from the teacher itself: distill.num_layers = N or distill.layers = [...]",
        )


def copy_layers(teacher_model, keep: list[int]):
    """A new classifier holding the teacher's embeddings, the encoder layers `keep` (renumbered 0..k-1), the pooler
    and the head: a config with fewer layers and a state dict mapped onto it, so it saves and loads as any BERT."""
    import copy

    config = copy.deepcopy(teacher_model.config)
    config.num_hidden_layers = len(keep)
    student = type(teacher_model)(config)
    prefix = f"{teacher_model.base_model_prefix}.encoder.layer."
    renumbered = {str(old): str(new) for new, old in enumerate(keep)}
    state = {}
    for name, tensor in teacher_model.state_dict().items():
        if name.startswith(prefix):
            index, rest = name[len(prefix):].split(".", 1)
            if index not in renumbered:
                continue
            name = f"{prefix}{renumbered[index]}.{rest}"
        state[name] = tensor
    student.load_state_dict(state, strict=True)
    return student


def unfold_head(model) -> None:
    """Undo what the teacher folded into its head when it was saved (regression's units, calibration's temperature):
    the student trains at the scale its own run folds back in when it saves. The teacher's thresholds and
    temperatures are dropped from the config: the student tunes its own on validation."""
    import torch

    config = model.config
    weight, bias = model.classifier.weight, model.classifier.bias
    with torch.no_grad():
        if (target := getattr(config, "regression_target", None)):
            weight /= target["std"]
            bias.sub_(target["mean"]).div_(target["std"])
        if (calibration := getattr(config, "calibration", None)):
            t = torch.as_tensor(calibration["temperature"], dtype=weight.dtype)
            weight.mul_(t[:, None] if t.numel() > 1 else t)
            bias.mul_(t)
    for key in ("regression_target", "calibration", "label_thresholds"):
        if hasattr(config, key):
            delattr(config, key)


def _model_identity(directory: Path) -> str:
    """What decides a model's outputs: its config and weights (an export: its graph and settings)."""
    files = ["config.json", "model.safetensors", "model.onnx", "export.json"]
    return json.dumps({name: hash_file(directory / name) for name in files if (directory / name).is_file()}, sort_keys=True)


def teacher_outputs(scorer: Path, columns: dict[str, list], *, device: str, show: bool) -> Any:
    """The teacher's outputs (float32, examples x outputs, as its saved model gives them) for tokenized columns,
    through the inference path; cached by (model files, input ids), so a resume or a second student reads them back."""
    import numpy as np

    ids_digest = hashlib.sha256()
    for name in sorted(columns):
        for row in columns[name]:
            ids_digest.update(np.asarray(row, dtype=np.int32).tobytes())
            ids_digest.update(b"|")
    key = hashlib.sha256(json.dumps({"version": TEACHER_CACHE_VERSION, "model": _model_identity(scorer), "inputs": ids_digest.hexdigest()}).encode()).hexdigest()[:24]
    cached = cache_root() / "teacher" / f"{key}.npy"
    if cached.is_file():
        try:
            return np.load(cached)
        except (OSError, ValueError):
            pass  # a corrupt entry: score again below

    import torch

    # the loop's thread count, kept: a resume reads the run's, and float sums depend on it
    classifier = load_for_inference(scorer, device=None if is_export_dir(scorer) else device, threads=torch.get_num_threads())
    n = len(columns["input_ids"])
    order = sorted(range(n), key=lambda i: -len(columns["input_ids"][i]))  # chunks of like lengths pad least
    out = np.empty((n, len(classifier.labels) if classifier.problem.has_classes else 1), dtype=np.float32)
    start = time.perf_counter()
    with Progress("scoring with the teacher", total=n, live=show and sys.stderr.isatty()) as progress:
        for begin in range(0, n, SCORING_CHUNK):
            index = order[begin : begin + SCORING_CHUNK]
            out[index] = logits(classifier, {name: [rows[i] for i in index] for name, rows in columns.items()})
            done = begin + len(index)
            progress.update(completed=done, status=f"{done / (time.perf_counter() - start):.0f} texts/s")
    seconds = time.perf_counter() - start
    if show:
        print(f"teacher scored {n} texts in {seconds:.1f} s ({n / seconds:.0f} texts/s, {classifier.backend} on {classifier.device})", file=sys.stderr, flush=True)
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.stem}.{os.getpid()}.npy")
    try:
        np.save(tmp, out)
        os.replace(umask_modes(tmp), cached)
    except OSError:
        tmp.unlink(missing_ok=True)  # a cache is an optimisation: failing to write it is not fatal
    return out


def _normalised(text: str) -> str:
    """How two texts count as the same for the leak check: an uncased model reads case and spacing away."""
    return " ".join(text.split()).casefold()


def read_unlabeled(recipe: Recipe, data) -> dict[str, list[str]]:
    """distill.unlabeled's non-blank texts (and pairs), refused where one is also in the validation or test split:
    the teacher's answers for them would leak the held-out labels into the student."""
    d, path = recipe.data, recipe.data_path("distill")
    frame = read_table(path)
    wanted = {"data.text": d.text, **({"data.text_pair": d.text_pair} if d.text_pair else {})}
    require_columns(list(frame.columns), wanted, str(path), note="distill.unlabeled needs the text columns of the training data")
    texts = [cell_text(v) for v in frame[d.text].tolist()]
    pairs = [cell_text(v) for v in frame[d.text_pair].tolist()] if d.text_pair else None
    keep = [i for i, t in enumerate(texts) if not is_blank(t) and (pairs is None or not is_blank(pairs[i]))]
    if not keep:
        raise DataError(f"{path}: no non-empty texts in column {d.text!r}", fix="point distill.unlabeled at a file with text rows")

    def key(text: str, pair: str | None) -> str:
        return _normalised(text) + ("\t" + _normalised(pair) if pair is not None else "")

    held_out: dict[str, str] = {}
    for split in ("validation", "test"):
        if split in data.splits:
            rows = data.splits[split]
            for i, text in enumerate(rows["text"]):
                held_out.setdefault(key(text, rows["text_pair"][i] if data.is_pair else None), split)
    leaks = [i for i in keep if key(texts[i], pairs[i] if pairs else None) in held_out]
    if leaks:
        splits = sorted({held_out[key(texts[i], pairs[i] if pairs else None)] for i in leaks})
        raise DataError(
            f"{path}: {len(leaks)} of its {len(keep)} texts are also in the {' and '.join(splits)} split ({rows_named(path, leaks)}): "
            "the teacher's answers for them would leak held-out labels into the student, and its scores there would read too high",
            fix="remove those rows from the unlabelled file (the same text in any case or spacing counts)",
        )
    return {"text": [texts[i] for i in keep], **({"text_pair": [pairs[i] for i in keep]} if pairs else {})}


class Distillation(Classification):
    command, noun = "distill", "distillation"
    resume_ignores = frozenset({"pretrain."})

    def __init__(self, recipe: Recipe, *, show_progress: bool = True):
        super().__init__(recipe)
        self.settings = recipe.distill
        self.teacher = find_teacher(recipe, None)
        # beside the teacher's by default (runs/agnews -> runs/agnews-student): never onto it
        self.run_dir = recipe.run_dir.with_name(recipe.run_dir.name + "-student")
        self.teacher_config = model_config(str(self.teacher))
        self.show_progress = show_progress
        self.scorer = self.teacher
        if self.settings.teacher_export is not None:
            export = recipe.local_dir(self.settings.teacher_export)
            if export is None or not is_export_dir(export):
                raise BertctlError(
                    f"distill.teacher_export {self.settings.teacher_export}: {'not an ONNX export dir (no model.onnx and export.json)' if export else 'no such directory'}",
                    fix=f"export the teacher first (bertctl export {self.teacher}), or remove distill.teacher_export to score with its own weights",
                )
            self.scorer = export.resolve()
        self.keep = student_layers(recipe, int(self.teacher_config.num_hidden_layers))
        if self.keep is not None:
            self.model_source = str(self.teacher)  # tokenizer, config and weights: the teacher's
        self.unlabeled: dict[str, list[str]] | None = None
        self.unlabeled_count = 0

    def load(self, accelerator):
        """Every check first (teacher against the data, tokenizer, unlabelled texts against the held-out splits), so
        a refused distillation writes nothing, not even a cache entry; then the classification task's load."""
        recipe = self.recipe
        data = load_data(recipe)
        check_teacher_fits(recipe, self.teacher, self.teacher_config, data.labels)
        if self.keep is None:
            check_same_tokenizer(recipe.model.name, load_tokenizer(self.model_source, base_dir=recipe.base_dir_path), self.teacher, load_tokenizer(str(self.teacher)))
        self.unlabeled = read_unlabeled(recipe, data) if self.settings.unlabeled is not None else None
        return super().load(accelerator)

    def extend_train(self, accelerator) -> None:
        """Give every training example the teacher's outputs, after adding the unlabelled texts (label: a
        placeholder, `labelled` 0)."""
        from datasets import Dataset, concatenate_datasets

        recipe = self.recipe
        train = self.data.splits["train"]
        train = train.add_column("labelled", [1.0] * len(train))
        if self.unlabeled is not None:
            fn = tokenize_batch(self.tokenizer, recipe.model.max_length, "text_pair" in self.unlabeled, recipe.model.truncation)
            extra = Dataset.from_dict(self.unlabeled).map(fn, batched=True, batch_size=1000, remove_columns=list(self.unlabeled))
            placeholder = train[0]["label"]
            placeholder = [0.0] * len(placeholder) if isinstance(placeholder, list) else type(placeholder)(0)
            extra = extra.add_column("label", [placeholder] * len(extra)).add_column("labelled", [0.0] * len(extra))
            self.unlabeled_count = len(extra)
            train = concatenate_datasets([train, extra.select_columns(train.column_names).cast(train.features)])
        names = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in train.column_names]
        outputs = teacher_outputs(self.scorer, {name: train[name] for name in names}, device=accelerator.device.type,
                                  show=self.show_progress and accelerator.is_main_process)
        self.data.splits["train"] = train.add_column("teacher", outputs.tolist())

    def initial_model(self):
        if self.keep is None:
            return super().initial_model()
        teacher = load_classifier(str(self.teacher), trained=True)
        student = copy_layers(teacher, self.keep)
        unfold_head(student)
        return student

    def loss(self, model, batch):
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "teacher", "labelled")}
        logits = model(**inputs).logits.float()
        alpha = self.settings.alpha
        soft = self.problem.distill_loss(logits, batch["teacher"], self.settings.temperature, self.target)
        labelled = batch["labelled"] > 0.5
        if not bool(labelled.any()):  # a batch of unlabelled texts only
            return alpha * soft
        return alpha * soft + (1.0 - alpha) * self.criterion(logits[labelled], batch["labels"][labelled])

    def describe(self) -> str:
        student = f"layers {self.keep} of the teacher's {self.teacher_config.num_hidden_layers}" if self.keep is not None else self.recipe.model.name
        extra = f" + {self.unlabeled_count} unlabelled" if self.unlabeled_count else ""
        return f"teacher {self.teacher}, student {student}; alpha {self.settings.alpha}, T {self.settings.temperature}; " + super().describe().replace(" examples,", f" examples{extra},", 1)

    def metrics(self, state):
        teacher_metrics = json.loads((self.teacher / FINISHED_MARKER).read_text(encoding="utf-8"))
        labelled = len(self.data.splits["train"]) - self.unlabeled_count
        return {
            **super().metrics(state),
            "train_examples": labelled,
            "distill": {
                "teacher": str(self.teacher),
                "scored_with": str(self.scorer),
                "teacher_layers": int(self.teacher_config.num_hidden_layers),
                "student_layers": self.keep if self.keep is not None else None,
                "student_model": None if self.keep is not None else self.recipe.model.name,
                "alpha": self.settings.alpha,
                "temperature": self.settings.temperature,
                "unlabeled_examples": self.unlabeled_count,
                "teacher_validation": teacher_metrics.get("validation", {}),
            },
        }

    def card(self, metrics, run_dir):
        d = metrics["distill"]
        student = f"the teacher keeping encoder layers {d['student_layers']} of its {d['teacher_layers']}" if d["student_layers"] is not None else f"`{d['student_model']}`"
        teacher = d["teacher_validation"]
        rows = "\n".join(f"| {k} | {v:.4f} | {teacher[k]:.4f} |" if isinstance(teacher.get(k), float) else f"| {k} | {v:.4f} | - |"
                         for k, v in metrics["validation"].items() if isinstance(v, float))
        texts = f"{metrics['train_examples']} labelled" + (f" and {d['unlabeled_examples']} unlabelled" if d["unlabeled_examples"] else "")
        section = (
            f"\n## Distillation\nTeacher: `{d['teacher']}` ({d['teacher_layers']} encoder layers). Student: {student}. Loss: {d['alpha']} x the teacher term "
            f"(temperature {d['temperature']}) + {1 - d['alpha']:g} x the label loss, on {texts} training texts.\n\n"
            f"| validation metric | student | teacher |\n|---|---|---|\n{rows}\n"
        )
        return model_card(self.recipe, self.data, metrics, made=f"distilled by `bertctl distill {self.recipe.source}` from `{d['teacher']}`", section=section)


def distill(recipe: Recipe, teacher: str | Path | None = None, **options: Any) -> RunResult:
    """Train a student of `teacher` (or recipe.distill.teacher) as `recipe` says into a finished run dir. Options are
    run_loop's: output_dir, resume, overwrite, progress, stop_after_steps (see bertctl.loop.run_loop)."""
    if teacher is not None:
        # the recipe saved with the run names its teacher, and a resume with another teacher is refused
        recipe = recipe.model_copy(deep=True)
        recipe.distill.teacher = str(find_teacher(recipe, teacher))
    task = Distillation(recipe, show_progress=options.get("progress", True))
    target = Path(options["output_dir"]) if options.get("output_dir") is not None else task.run_dir
    if target.resolve() == task.teacher:
        raise RunError(f"the student would be written into its teacher's run dir {task.teacher}", fix="pass another --output-dir (the default is the recipe's run dir + '-student')")
    return run_loop(task, recipe, **options)
