"""`bertctl serve` fuzzed against its own OpenAPI schema with schemathesis (issue 24, part 5): every check it has
(no 5xx, responses and headers as declared, only documented status codes, bad input refused, good input taken),
for a run dir and an export dir, each problem type, and a server with an API key. Bounded: a few dozen examples
per operation, so it runs in CI in seconds."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='bertctl serve needs the [serve] extra: pip install -e ".[serve]"')
schemathesis = pytest.importorskip("schemathesis", reason='the dev extra: pip install -e ".[dev]"')

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from bertctl.serving.app import ServeOptions, create_app  # noqa: E402
from bertctl.serving.batcher import Backend  # noqa: E402
from conftest import AGNEWS_LABELS, _tiny_config  # noqa: E402

KEY = "fuzz-key-0123456789"
EMOTIONS = ["anger", "joy", "neutral"]


def tiny_model(out: Path, tokenizer_dir: Path, *, problem_type: str, labels: list[str] | None, recipe: str) -> Path:
    """A randomly initialised tiny classifier of one problem type, saved as a run dir (weights + recipe.toml)."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    names = labels or ["score"]
    config = _tiny_config(tokenizer.vocab_size, num_labels=len(names), problem_type=problem_type,
                          id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    BertForSequenceClassification(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "recipe.toml").write_text(f'[model]\nmax_length = 32\nproblem_type = "{problem_type}"\n{recipe}')
    return out


@pytest.fixture(scope="module", params=["single-label-run", "single-label-export", "multi-label-run", "regression-pairs-run", "single-label-with-key"])
def served(request, tmp_path_factory, varied_classifier_dir, bundled_tokenizer_dir):
    kind = request.param
    root = tmp_path_factory.mktemp(f"fuzz-{kind}")
    if kind == "single-label-export":
        pytest.importorskip("onnxruntime", reason='the [onnx] extra: pip install -e ".[onnx]"')
        from bertctl.export import export_run
        from test_export import make_run

        model = export_run(make_run(root, varied_classifier_dir), max_drop=100.0).output  # random weights: no metric to hold to
    elif kind.startswith("single-label"):
        model = root / "run"
        shutil.copytree(varied_classifier_dir, model)
        (model / "recipe.toml").write_text('[model]\nmax_length = 32\n[data]\ntext = "text"\n')
    elif kind == "multi-label-run":
        model = tiny_model(root / "run", bundled_tokenizer_dir, problem_type="multi_label_classification", labels=EMOTIONS, recipe='[data]\ntext = "text"\n')
    else:
        model = tiny_model(root / "run", bundled_tokenizer_dir, problem_type="regression", labels=None, recipe='[data]\ntext = "sentence1"\ntext_pair = "sentence2"\n')
    backend = Backend.load(model)
    options = ServeOptions(max_texts=16, max_body_bytes=20_000, max_wait_ms=0, api_key=KEY if kind.endswith("key") else None)
    return kind, backend, create_app(backend, options, log_stream=io.StringIO())


def test_serve_schema_fuzzed_with_every_check(served):
    # hypothesis driven by hand over each operation's strategy, not schemathesis' pytest plugin: the plugin's
    # from_fixture breaks on this pytest ('Function' object has no attribute '_nodeid')
    from hypothesis import given

    kind, _, app = served
    headers = {"Authorization": f"Bearer {KEY}"} if kind.endswith("key") else {}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{o.method.upper()} {o.path}" for o in operations} == {"POST /predict", "POST /explain", "GET /health", "GET /metadata", "GET /metrics"}
    # all of schemathesis' checks, but one for a pairs model: `pairs` must be as long as `texts`, which JSON Schema
    # cannot say, so a schema-valid body may rightly get a 422 (the schema's description says so)
    excluded = [positive_data_acceptance] if kind.startswith("regression-pairs") else []
    for operation in operations:

        @given(case=operation.as_strategy())
        # /explain runs integrated gradients (steps x texts forward and backward passes): fewer examples, still every check
        @settings(max_examples=8 if operation.path == "/explain" else 30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def fuzz(case):
            case.call_and_validate(headers=headers, excluded_checks=excluded)

        fuzz()


def test_serve_schema_models_of_each_kind_are_what_the_fuzz_ran(served):
    """The fixture really built each backend it names: a fuzz of four copies of one model would prove little."""
    kind, backend, _ = served
    expected = {"single-label-run": ("torch", "single_label_classification", False), "single-label-export": ("onnxruntime", "single_label_classification", False),
                "multi-label-run": ("torch", "multi_label_classification", False), "regression-pairs-run": ("torch", "regression", True),
                "single-label-with-key": ("torch", "single_label_classification", False)}[kind]
    assert (backend.name, backend.problem.name, bool(backend.pair_column)) == expected
    assert backend.labels == {"multi-label-run": EMOTIONS, "regression-pairs-run": ["score"]}.get(kind, AGNEWS_LABELS)
