"""Corpus parsing, cleaning, splitting and every bad-input case named in the docs."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

from prefillray.corpus import CorpusError, load_corpus, load_saved_corpus, save_corpus
from prefillray.storage import Storage


def long_cfg(path: str, **extra) -> dict:
    return {
        "name": "long",
        "path": str(path),
        "format": "long",
        "columns": {"text": "question", "model": "model", "correct": "is_correct", "cost": "cost",
                    "output_tokens": "output_tokens", "task": "task", "split": "split"},
        "split": {"strategy": "stratified", "test_fraction": 0.5, "seed": 0},
        **extra,
    }


def long_frame() -> pd.DataFrame:
    rows = []
    for q in range(6):
        for m, price in (("m-a", 1.0), ("m-b", 2.0)):
            rows.append({"question": f"question {q}?", "model": m, "is_correct": (q + len(m)) % 2,
                         "cost": 0.001 * price, "output_tokens": 100 * (q + 1), "task": "t" + str(q % 2)})
    return pd.DataFrame(rows)


def wide_cfg(path: str, **extra) -> dict:
    return {
        "name": "wide",
        "path": str(path),
        "format": "wide",
        "columns": {"text": "prompt", "task": "task", "split": "split"},
        "cost_suffix": "|total_cost",
        "split": {"strategy": "stratified", "test_fraction": 0.5, "seed": 0},
        **extra,
    }


def wide_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "prompt": ["a?", "b?", "c?", "d?"],
        "task": ["x", "x", "y", "y"],
        "split": ["train", "test", "train", "test"],
        "m1": [1.0, 0.0, np.nan, 1.0],
        "m2": [0.0, 0.0, 1.0, 1.0],
        "m1|total_cost": [0.1, 0.1, 0.2, 0.2],
        "m2|total_cost": [0.01, 0.01, 0.02, 0.02],
    })


# -- the shipped RouterBench subset --------------------------------------------------------
def test_routerbench_cleaning_is_counted_and_split_does_not_leak(routerbench_cfg):
    corpus = load_corpus(routerbench_cfg)
    assert corpus.cleaning["rows_read"] == 3178
    assert corpus.cleaning["duplicate_prompts"] == 16
    assert len(corpus) == 3178 - 16
    assert corpus.queries["text"].is_unique and corpus.queries["query_id"].is_unique
    assert len(corpus.models) == 11 and corpus.costs is not None
    train, test = (set(corpus.queries.loc[corpus.split_indices(s), "text"]) for s in ("train", "test"))
    assert not train & test
    # stratified by task: each task's test share is the configured fraction
    for task, rows in corpus.queries.groupby("task"):
        assert abs((rows["split"] == "test").mean() - 0.3) < 0.01, task


def test_routerbench_shipped_split_moves_leaked_prompts_to_train(routerbench_cfg):
    routerbench_cfg["split"]["strategy"] = "shipped"
    corpus = load_corpus(routerbench_cfg)
    assert corpus.cleaning["split_conflicts"] == 8
    raw = pd.read_parquet(routerbench_cfg["path"])
    shipped_test, shipped_train = (set(raw.loc[raw["split"] == s, "prompt"]) for s in ("test", "train"))
    assert len(shipped_test & shipped_train) == 8
    assert (corpus.queries["split"] == "test").sum() == len(shipped_test - shipped_train)
    train, test = (set(corpus.queries.loc[corpus.split_indices(s), "text"]) for s in ("train", "test"))
    assert not train & test


def test_split_is_seeded_and_independent_of_file_order(tmp_path, routerbench_cfg):
    df = pd.read_parquet(routerbench_cfg["path"])
    shuffled = tmp_path / "shuffled.parquet"
    df.sample(frac=1.0, random_state=1).to_parquet(shuffled)
    a = load_corpus(routerbench_cfg)
    b = load_corpus({**routerbench_cfg, "path": str(shuffled)})
    c = load_corpus({**routerbench_cfg, "split": {**routerbench_cfg["split"], "seed": 1}})
    split_of = lambda corpus: dict(zip(corpus.queries["query_id"], corpus.queries["split"]))
    assert split_of(a) == split_of(b)
    assert split_of(a) != split_of(c)


def test_empty_labels_stay_masked_never_wrong(tmp_path):
    path = tmp_path / "w.parquet"
    wide_frame().to_parquet(path)
    corpus = load_corpus(wide_cfg(path))
    row = corpus.queries.index[corpus.queries["text"] == "c?"][0]
    assert np.isnan(corpus.labels[row, corpus.models.index("m1")])
    assert not corpus.mask[row, corpus.models.index("m1")]
    assert corpus.mask.sum() == 7


def test_duplicates_reconciled_conflicts_masked(tmp_path):
    df = wide_frame()
    dup = df.iloc[[0]].copy()
    dup["m1"], dup["m2"], dup["split"] = 1.0, 1.0, "test"  # m1 agrees, m2 conflicts, other side of split
    df = pd.concat([df, dup], ignore_index=True)
    path = tmp_path / "w.csv"
    df.to_csv(path, index=False)
    corpus = load_corpus({**wide_cfg(path), "split": {"strategy": "shipped"}})
    assert corpus.cleaning["duplicate_rows_merged"] == 1
    assert corpus.cleaning["label_conflicts_masked"] == 1
    row = corpus.queries.index[corpus.queries["text"] == "a?"][0]
    assert corpus.labels[row, corpus.models.index("m1")] == 1.0
    assert np.isnan(corpus.labels[row, corpus.models.index("m2")])
    assert corpus.queries.loc[row, "split"] == "train"


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_long_format_with_costs(tmp_path, suffix):
    df = long_frame()
    path = tmp_path / f"labels.{suffix}"
    {"csv": lambda p: df.to_csv(p, index=False), "parquet": df.to_parquet,
     "jsonl": lambda p: df.to_json(p, orient="records", lines=True)}[suffix](path)
    corpus = load_corpus(long_cfg(path))
    assert corpus.models == ["m-a", "m-b"] and len(corpus) == 6
    row = corpus.queries.index[corpus.queries["text"] == "question 2?"][0]
    np.testing.assert_allclose(corpus.costs[row], [0.001, 0.002])
    assert corpus.labels[row].tolist() == [(2 + 3) % 2, (2 + 3) % 2]
    assert set(corpus.queries["task"]) == {"t0", "t1"}


def test_long_format_prices_times_output_tokens(tmp_path):
    df = long_frame().drop(columns=["cost"])
    path = tmp_path / "labels.csv"
    df.to_csv(path, index=False)
    corpus = load_corpus(long_cfg(path, prices_per_1m_output_tokens={"m-a": 10.0, "m-b": 20.0}))
    row = corpus.queries.index[corpus.queries["text"] == "question 0?"][0]
    np.testing.assert_allclose(corpus.costs[row], [100 * 10 / 1e6, 100 * 20 / 1e6])


def test_wide_without_costs_has_none(tmp_path):
    path = tmp_path / "w.parquet"
    wide_frame().drop(columns=["m1|total_cost", "m2|total_cost"]).to_parquet(path)
    assert load_corpus(wide_cfg(path)).costs is None


def test_reads_from_fsspec_url(s3_server, routerbench_cfg):
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    fs.put(routerbench_cfg["path"], "prefillray-test/labels/rb.parquet")
    corpus = load_corpus({**routerbench_cfg, "path": "s3://prefillray-test/labels/rb.parquet"}, s3_server)
    assert len(corpus) == 3162


def test_saved_corpus_round_trips(tmp_path, routerbench_cfg):
    corpus = load_corpus({**routerbench_cfg, "limit": 50})
    save_corpus(corpus, Storage(str(tmp_path)))
    back = load_saved_corpus(Storage(str(tmp_path)), corpus.key)
    assert back.key == corpus.key and back.models == corpus.models
    np.testing.assert_array_equal(back.mask, corpus.mask)


# -- bad input: an early error naming the file, the row or column, and what was expected ----
def write_wide(tmp_path, df, name="bad.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def test_missing_prompt_column(tmp_path):
    path = write_wide(tmp_path, wide_frame().drop(columns=["prompt"]))
    with pytest.raises(CorpusError, match=r"bad\.csv: missing column\(s\) \['prompt'\]"):
        load_corpus(wide_cfg(path))


def test_missing_long_columns(tmp_path):
    df = long_frame().drop(columns=["is_correct"])
    path = tmp_path / "l.csv"
    df.to_csv(path, index=False)
    with pytest.raises(CorpusError, match=r"l\.csv: missing column\(s\) \['is_correct'\]"):
        load_corpus(long_cfg(path))


def test_model_with_no_labels(tmp_path):
    df = wide_frame()
    df["m2"] = np.nan
    with pytest.raises(CorpusError, match=r"bad\.csv: model\(s\) \['m2'\] have no labels"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


def test_label_other_than_0_1_empty(tmp_path):
    df = wide_frame()
    df.loc[2, "m2"] = 0.5
    with pytest.raises(CorpusError, match=r"bad\.csv: column 'm2', data row 3: expected a label 0, 1 or empty, found 0\.5"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


def test_text_label_names_the_column(tmp_path, routerbench_cfg):
    df = wide_frame()
    df["router_choice"] = "m1"
    with pytest.raises(CorpusError, match=r"column 'router_choice', data row 1: expected a label 0, 1 or empty, found 'm1'"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))
    assert load_corpus({**wide_cfg(write_wide(tmp_path, df)), "ignore_columns": ["router_choice"]}).models == ["m1", "m2"]


def test_negative_cost(tmp_path):
    df = wide_frame()
    df.loc[1, "m2|total_cost"] = -0.5
    with pytest.raises(CorpusError, match=r"column 'm2\|total_cost', data row 2: cost must be non-negative"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


def test_missing_and_nan_costs_stay_missing_and_are_counted(tmp_path):
    df = wide_frame()
    df.loc[0, "m1|total_cost"] = np.nan
    df.loc[2, "m2|total_cost"] = float("nan")
    corpus = load_corpus(wide_cfg(write_wide(tmp_path, df)))
    assert corpus.cleaning["costs_missing"] == 2 and int(np.isnan(corpus.costs).sum()) == 2


def test_model_without_any_cost_is_an_error(tmp_path):
    df = wide_frame()
    df["m2|total_cost"] = np.nan
    with pytest.raises(CorpusError, match=r"model\(s\) \['m2'\] have no cost at all"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


def test_non_numeric_cost(tmp_path):
    df = wide_frame().astype({"m1|total_cost": object})
    df.loc[3, "m1|total_cost"] = "cheap"
    with pytest.raises(CorpusError, match=r"column 'm1\|total_cost', data row 4: expected a non-negative number, found 'cheap'"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt(tmp_path, prompt):
    df = wide_frame()
    df.loc[1, "prompt"] = prompt
    with pytest.raises(CorpusError, match=r"column 'prompt', data row 2: empty prompt"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


def test_unknown_model_in_price_table(tmp_path):
    path = tmp_path / "l.csv"
    long_frame().drop(columns=["cost"]).to_csv(path, index=False)
    with pytest.raises(CorpusError, match=r"prices_per_1m_output_tokens names model\(s\) \['m-z'\]"):
        load_corpus(long_cfg(path, prices_per_1m_output_tokens={"m-a": 1.0, "m-b": 1.0, "m-z": 1.0}))
    with pytest.raises(CorpusError, match=r"model\(s\) \['m-b'\] have no price"):
        load_corpus(long_cfg(path, prices_per_1m_output_tokens={"m-a": 1.0}))


def test_output_tokens_without_prices(tmp_path):
    path = tmp_path / "l.csv"
    long_frame().drop(columns=["cost"]).to_csv(path, index=False)
    with pytest.raises(CorpusError, match="needs per-model prices"):
        load_corpus(long_cfg(path))


def test_long_duplicate_pair(tmp_path):
    df = long_frame()
    df = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    path = tmp_path / "l.csv"
    df.to_csv(path, index=False)
    with pytest.raises(CorpusError, match=r"data row 13: a second row for the same \(question, model\) pair"):
        load_corpus(long_cfg(path))


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(CorpusError, match="label file not found"):
        load_corpus(wide_cfg(tmp_path / "nope.csv"))
    with pytest.raises(CorpusError, match="unknown label-file format"):
        load_corpus(wide_cfg(tmp_path / "labels.xlsx"))


def test_empty_file(tmp_path):
    path = tmp_path / "e.csv"
    wide_frame().iloc[:0].to_csv(path, index=False)
    with pytest.raises(CorpusError, match="e.csv: the label file has no rows"):
        load_corpus(wide_cfg(path))


def test_bad_split_values(tmp_path):
    df = wide_frame()
    df.loc[0, "split"] = "validation"
    with pytest.raises(CorpusError, match=r"column 'split': expected 'train' or 'test', found 'validation'"):
        load_corpus({**wide_cfg(write_wide(tmp_path, df)), "split": {"strategy": "shipped"}})


def test_cost_columns_for_some_models_only(tmp_path):
    df = wide_frame().drop(columns=["m2|total_cost"])
    with pytest.raises(CorpusError, match=r"cost columns present for some models but missing: \['m2\|total_cost'\]"):
        load_corpus(wide_cfg(write_wide(tmp_path, df)))


def test_non_utf8_bytes_are_named(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("prompt,m1\ncaf\xe9?,1\n".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"latin1\.csv: could not be parsed as csv"):
        load_corpus(wide_cfg(path))


# -- RouterDC-style files: expected accuracy from scores, held-out tasks -----------------------
def scored_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "prompt": ["p1", "p2", "p3", "p4", "p5"],
        "task": ["gsm8k", "mmlu", "gsm8k", "mbpp", "mmlu"],
        "split": ["train", "train", "test", "test", "test"],
        "label_kind": ["multi_attempt", "probability", "multi_attempt", "multi_attempt", "probability"],
        "m1": [1.0, 0.0, 0.0, 1.0, 1.0],
        "m1|score": [0.7, 0.0, 0.3, 0.5, 0.93],
        "m2": [0.0, 1.0, np.nan, 0.0, 0.0],
        "m2|score": [0.1, 0.6, np.nan, 0.2, 0.0],
    })


def scored_cfg(path, **extra) -> dict:
    return wide_cfg(path, ignore_columns=["label_kind"], split={"strategy": "shipped"},
                    expected_accuracy={"suffix": "|score", "kind_column": "label_kind", "kinds": ["multi_attempt"]},
                    **extra)


def test_expected_accuracy_from_scores_on_multi_attempt_rows_only(tmp_path):
    path = tmp_path / "dc.parquet"
    scored_frame().to_parquet(path)
    corpus = load_corpus(scored_cfg(path, holdout_tasks=["mbpp"]))
    by_text = corpus.queries.reset_index(drop=True).set_index("text").index
    expected = pd.DataFrame(corpus.expected, index=by_text, columns=corpus.models)
    # multi_attempt rows: the score; probability rows: the 0/1 label (not the probability)
    assert expected.loc["p1", "m1"] == pytest.approx(0.7) and expected.loc["p3", "m1"] == pytest.approx(0.3)
    assert expected.loc["p5", "m1"] == 1.0 and expected.loc["p2", "m2"] == 1.0
    assert np.isnan(expected.loc["p3", "m2"])  # a missing label stays missing
    assert corpus.models == ["m1", "m2"]  # score and kind columns are not models
    split = corpus.queries.set_index("text")["split"]
    assert split["p4"] == "ood" and split["p1"] == "train" and split["p3"] == "test"
    assert corpus.cleaning["holdout_queries"] == 1

    store = Storage(str(tmp_path / "s"))
    save_corpus(corpus, store)
    back = load_saved_corpus(store, corpus.key)
    np.testing.assert_array_equal(back.expected, corpus.expected)
    assert back.key == corpus.key


def test_expected_accuracy_changes_the_corpus_key(tmp_path):
    path = tmp_path / "dc.parquet"
    scored_frame().to_parquet(path)
    with_scores = load_corpus(scored_cfg(path))
    without = load_corpus(wide_cfg(path, ignore_columns=["label_kind"], split={"strategy": "shipped"}))
    assert without.expected is None and with_scores.key != without.key


def test_score_out_of_range_is_named(tmp_path):
    df = scored_frame()
    df.loc[2, "m1|score"] = 1.5
    path = tmp_path / "dc.parquet"
    df.to_parquet(path)
    with pytest.raises(CorpusError, match=r"'m1\|score', data row 3: expected a score in \[0, 1\]"):
        load_corpus(scored_cfg(path))


def test_missing_kind_column_and_unknown_holdout_task(tmp_path):
    path = tmp_path / "dc.parquet"
    scored_frame().drop(columns=["label_kind"]).to_parquet(path)
    with pytest.raises(CorpusError, match=r"missing column\(s\) \['label_kind'\] for data.expected_accuracy"):
        load_corpus(scored_cfg(path))
    scored_frame().to_parquet(path)
    with pytest.raises(CorpusError, match=r"data.holdout_tasks names task\(s\) \['ceval'\]"):
        load_corpus(scored_cfg(path, holdout_tasks=["ceval"]))


def test_routerdc7_shipped_copy_dedupes_and_holds_out_ood_tasks():
    from omegaconf import OmegaConf

    from conftest import ROOT

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "data" / "routerdc7.yaml"), resolve=True)
    corpus = load_corpus(cfg)
    assert len(corpus) == 20_565 and len(corpus.models) == 7 and corpus.costs is None
    c = corpus.cleaning
    assert (c["duplicate_rows_merged"], c["split_conflicts"], c["label_conflicts_masked"]) == (35, 23, 17)
    splits = corpus.queries.groupby("split")["task"].unique()
    assert sorted(splits["ood"]) == ["MATH_prealgebra", "ceval", "javascript", "mbpp"]
    assert not set(splits["ood"]) & set(splits["train"]) and not set(splits["ood"]) & set(splits["test"])
    # no prompt on two sides once merged
    assert corpus.queries["text"].is_unique
    multi = corpus.queries["task"].isin(["gsm8k", "humaneval"]).to_numpy()
    soft = corpus.expected[multi]
    assert ((soft > 0) & (soft < 1)).any()  # real shares of 10 attempts survive
    binary = corpus.queries["task"].isin(["mmlu", "cmmlu", "ceval", "arc_easy", "arc_challenge", "MATH_prealgebra"]).to_numpy()
    known = ~np.isnan(corpus.labels) & binary[:, None]
    np.testing.assert_array_equal(corpus.expected[known], corpus.labels[known])
