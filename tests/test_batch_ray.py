"""bertctl.Predictor (bertctl/batch.py): batches of rows labelled as `bertctl predict` labels them, as a plain
callable, pickled, and as a Ray Data class UDF on a local Ray cluster (2 CPUs, 2 actors) over sharded Parquet."""

from __future__ import annotations

import json
import pickle
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from bertctl.cli import app
from bertctl.errors import DataError

from conftest import agnews_rows

runner = CliRunner()
TEXTS = 2000
SHARDS = 4


def _texts(n: int) -> list[str]:
    # AG News texts, numbered so each is its own row; every 97th empty (an error row, as predict gives it)
    rows = agnews_rows("train", 4000)
    return ["" if i % 97 == 50 else f"{rows[i % len(rows)]['text'][: 40 + i % 200]} #{i}" for i in range(n)]


def _predict_file(model, tmp_path, texts: list[str]) -> list[dict]:
    import pandas as pd

    source = tmp_path / "texts.csv"
    pd.DataFrame({"id": range(len(texts)), "text": texts}).to_csv(source, index=False)
    result = runner.invoke(app, ["predict", "--model", str(model), "--file", str(source), "--text", "text", "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_batch_predictor_is_cheap_to_construct_and_picklable(varied_classifier_dir):
    from bertctl import Predictor

    predictor = Predictor.load(varied_classifier_dir, threads=1)
    assert predictor._classifier is None  # nothing loaded yet
    first = predictor({"text": np.array(["Stocks fell as oil prices rose", "Late goal wins the cup"])})
    assert predictor._classifier is not None
    shipped = pickle.dumps(predictor)
    assert len(shipped) < 2000  # the settings travel, not the model
    again = pickle.loads(shipped)
    assert again._classifier is None
    second = again({"text": np.array(["Stocks fell as oil prices rose", "Late goal wins the cup"])})
    assert list(second["label"]) == list(first["label"]) and np.array_equal(second["score"], first["score"])


def test_batch_predictor_gives_the_columns_of_predict_json(varied_classifier_dir, tmp_path):
    import pandas as pd

    from bertctl import Predictor

    texts = _texts(60)
    expected = _predict_file(varied_classifier_dir, tmp_path, texts)
    frame = pd.DataFrame({"id": range(60), "text": texts})
    got = Predictor.load(varied_classifier_dir, threads=1)(frame)
    assert list(got.columns) == ["id", "text", "label", "score", "top_k", "scores", "error"]
    assert got["id"].tolist() == list(range(60)) and frame.columns.tolist() == ["id", "text"]  # the input is left as it was
    for row, want in zip(got.to_dict("records"), expected):
        assert row["label"] == want["label"] and row["error"] == want.get("error")
        assert row["score"] == pytest.approx(want["score"], abs=1e-6) if want["score"] is not None else row["score"] is None
        assert row["scores"] == (pytest.approx(want["scores"], abs=1e-6) if want["scores"] else None)
    assert got["error"].notna().sum() == 1  # the one empty text


def test_batch_predictor_refuses_to_overwrite_a_column_and_takes_a_prefix(varied_classifier_dir):
    from bertctl import Predictor

    batch = {"text": np.array(["Stocks fell"]), "label": np.array(["Business"])}
    with pytest.raises(DataError, match="already has column 'label'") as refused:
        Predictor.load(varied_classifier_dir)(batch)
    assert 'prefix="pred_"' in refused.value.fix
    out = Predictor.load(varied_classifier_dir, prefix="pred_")(batch)
    assert out["label"][0] == "Business" and out["pred_label"][0] in {"World", "Sports", "Business", "Sci/Tech"}


def test_batch_check_shards_names_a_malformed_shard(tmp_path):
    import pandas as pd

    from bertctl.batch import check_shards

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        pd.DataFrame({"id": [i], "text": ["a text"]}).to_parquet(shards / f"part-{i}.parquet")
    assert [p.name for p in check_shards(shards)] == ["part-0.parquet", "part-1.parquet"]
    good = (shards / "part-1.parquet").read_bytes()
    (shards / "part-1.parquet").write_bytes(good[: len(good) // 2])  # cut short, as by a full disk
    with pytest.raises(DataError, match="part-1.parquet: not a readable Parquet file"):
        check_shards(shards)
    (shards / "part-1.parquet").write_bytes(good)
    pd.DataFrame({"id": [2], "body": ["a text"]}).to_parquet(shards / "part-2.parquet")
    with pytest.raises(DataError, match=r"part-2.parquet: no column 'text' \(columns: id, body\)"):
        check_shards(shards)
    (shards / "part-2.parquet").unlink()
    (shards / "part-3.jsonl").write_text('{"text": "fine"}\n{"text": "cut\n')
    with pytest.raises(DataError, match="part-3.jsonl: line 2 is not a JSON object"):
        check_shards(shards)


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')
    pytest.importorskip("ray.data", reason='Ray Data is not installed (pip install -e ".[ray]")')
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_batch_ray_data_two_actors_equal_predict_file(ray_cluster, varied_classifier_dir, tmp_path):
    import pandas as pd

    from bertctl import Predictor
    from bertctl.batch import check_shards

    ray = ray_cluster
    texts = _texts(TEXTS)
    expected = _predict_file(varied_classifier_dir, tmp_path, texts)
    shards = tmp_path / "shards"
    shards.mkdir()
    rows = pd.DataFrame({"id": range(TEXTS), "text": texts})
    for i in range(SHARDS):  # shard i holds every SHARDS-th row: order across shards is not the input order
        rows.iloc[i::SHARDS].to_parquet(shards / f"part-{i}.parquet", index=False)
    check_shards(shards)

    # small shards are read as one block, which one actor would take whole: split it, so both actors get work
    ds = ray.data.read_parquet(str(shards), include_paths=True).repartition(8)
    predicted = ds.map_batches(
        Predictor, fn_constructor_kwargs={"model": str(varied_classifier_dir), "threads": 1}, concurrency=2, batch_size=250, batch_format="pandas",
        num_cpus=0.5,  # half a CPU each: two actors holding both CPUs leave none for the read tasks (Ray waits forever)
    )
    predicted.write_parquet(str(tmp_path / "out"))
    got = pd.read_parquet(tmp_path / "out").sort_values("id").reset_index(drop=True)  # the id column restores the order
    for column in ("label", "error"):  # a Parquet null reads back as NaN in pandas; predict --json says null
        got[column] = got[column].astype(object).where(got[column].notna(), None)
    assert got["id"].tolist() == list(range(TEXTS)) and got["text"].tolist() == texts
    assert set(got["path"].map(lambda p: p.rsplit("/", 1)[-1])) == {f"part-{i}.parquet" for i in range(SHARDS)}
    assert got["label"].tolist() == [e["label"] for e in expected]
    assert got["error"].tolist() == [e.get("error") for e in expected]
    scored = [i for i, e in enumerate(expected) if e["score"] is not None]
    # the same forward pass on the same texts; only the batches' padding lengths differ (predict sorts 2,048 texts
    # by length, an actor 250), which moves a score by float32 rounding at most
    diff = np.abs(got["score"].to_numpy()[scored] - np.array([expected[i]["score"] for i in scored]))
    assert diff.max() <= 1e-6, diff.max()
    assert len(set(got["label"])) > 1  # the varied classifier tells texts apart: a shuffle would show


@pytest.mark.slow
def test_batch_ray_data_a_shard_without_the_text_column(ray_cluster, varied_classifier_dir, tmp_path):
    # Ray unifies the shards' schemas: a shard without the text column reads as null texts, which come back as
    # error rows (empty text), not as a failure. check_shards, run before the job, names the file instead.
    import pandas as pd

    from bertctl import Predictor
    from bertctl.batch import check_shards

    ray = ray_cluster
    shards = tmp_path / "shards"
    shards.mkdir()
    pd.DataFrame({"id": [0, 1], "text": ["Stocks fell", "Late goal"]}).to_parquet(shards / "part-0.parquet")
    pd.DataFrame({"id": [2], "headline": ["Rain"]}).to_parquet(shards / "part-1.parquet")
    with pytest.raises(DataError, match=r"part-1.parquet: no column 'text' \(columns: id, headline\)"):
        check_shards(shards)
    ds = ray.data.read_parquet(str(shards), include_paths=True)
    rows = ds.map_batches(Predictor, fn_constructor_kwargs={"model": str(varied_classifier_dir), "threads": 1}, concurrency=1, batch_size=10, batch_format="pandas", num_cpus=0.5).to_pandas()
    lost = rows[rows["id"] == 2].iloc[0]
    assert lost["error"] == "empty text: nothing to classify" and lost["path"].endswith("part-1.parquet")
