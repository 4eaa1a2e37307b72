"""probe → train → report on a real local Ray, over shards of a tiny random-weight Llama
(the 'prefill' encoder) and a second tiny encoder standing in for the semantic baseline;
the router API and CLI; DDP with 2 workers against 1."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from omegaconf import open_dict

from conftest import ROOT, stage_cfg
from prefillray.checkpoint import CheckpointError, RouterCheckpoint
from prefillray.router import Router
from prefillray.shards import load_features
from prefillray.stages import extract, probe, report, train
from prefillray.stages.pipeline import compare_config
from prefillray.storage import Storage


def run_pipeline(store, tiny_dir, overrides) -> dict:
    """extract (prefill + semantic encoder) → probe → train (both) → report."""
    cfg = stage_cfg(store, tiny_dir, overrides=overrides)
    sem_cfg = stage_cfg(store, tiny_dir, overrides=overrides)
    with open_dict(sem_cfg):
        sem_cfg.encoder = sem_cfg.report.semantic_encoder
        sem_cfg.train.features = "all"
    extract.run(cfg)
    extract.run(sem_cfg)
    probed = probe.run(cfg)
    trained = train.run(cfg)
    for blocks in cfg.report.compare:
        train.run(compare_config(cfg, list(blocks)))
    train.run(sem_cfg)
    reported = report.run(cfg)
    return {"cfg": cfg, "store": store, "probe": probed, "train": trained, "report": reported}


@pytest.fixture(scope="module")
def pipeline(ray_local, tmp_path_factory, tiny_llama_dir):
    return run_pipeline(tmp_path_factory.mktemp("store"), tiny_llama_dir, ["data.limit=120", "report.compare=[[tiny:L1.mean]]"])


@pytest.fixture(scope="module")
def routerdc_pipeline(ray_local, tmp_path_factory, tiny_llama_dir):
    """The RouterDC corpus (no costs, expected accuracies, OOD tasks) on a slice, soft targets."""
    return run_pipeline(tmp_path_factory.mktemp("store-dc"), tiny_llama_dir,
                        ["data=routerdc7", "data.limit=400", "train.targets=expected", "train.calibrate=true"])


def test_probe_outputs_and_rerun_is_skipped(pipeline, capsys):
    out = Storage(pipeline["probe"]["uri"])
    for name in ("probe.parquet", "probe.json", "heatmap.png", "layers.json"):
        assert out.exists(name), name
    ranking = pipeline["probe"]["ranking"]["tiny"]
    assert set(ranking) == {"last", "mean"} and sorted(ranking["mean"]) == ["L0.mean", "L1.mean", "L2.mean"]
    table = json.loads(out.read_bytes("probe.json"))
    assert {"j", "j_cross", "auc_heldout", "auc_logreg", "d_eff"} <= set(table["rows"][0])
    assert {"spearman_j_cross", "spearman_j_cross_vs_logreg"} <= set(table["rank_correlations"][0])
    assert probe.run(pipeline["cfg"]) == pipeline["probe"]
    assert "already exist" in capsys.readouterr().out


def test_train_uses_probe_ranking_and_writes_a_pickle_free_checkpoint(pipeline):
    ranking = pipeline["probe"]["ranking"]["tiny"]
    assert pipeline["train"]["blocks"] == [f"tiny:{ranking['last'][0]}", f"tiny:{ranking['mean'][0]}"]
    where = Storage(pipeline["train"]["router"])
    assert sorted(p.rsplit("/", 1)[-1] for p in where.fs.ls(where.root)) == ["router.json", "trunk.safetensors"]
    ckpt = RouterCheckpoint.load(where)
    assert ckpt.seeds == [0, 1] and len(ckpt.targets) == 11 and ckpt.costs is not None
    # the test split is never used for fitting: train/val rows only come from the training split
    rows = ckpt.meta["rows"]
    assert rows["train"] + rows["val"] + rows["test"] + rows["ood"] == 120 and rows["val"] > 0


def test_report_artifacts_and_baselines(pipeline):
    out = Storage(pipeline["report"]["uri"])
    for name in ("report.md", "report.json", "curves.png"):
        assert out.exists(name), name
    doc = json.loads(out.read_bytes("report.json"))
    names = [r["router"] for r in doc["summary"]]
    assert names[0] == "oracle" and names[1].startswith("best single:") and any(n.startswith("random") for n in names)
    assert [r["name"].split(" (")[0] for r in doc["routers"]] == ["prefill router", "prefill", "semantic router", "kNN on tinysem:L1.mean", "random scores"]
    assert doc["routers"][1]["name"] == "prefill (tiny:L1.mean)"
    for r in doc["routers"]:
        assert 0.0 <= r["mean_auc"] <= 1.0 and len(r["curve"]) > 10
    oracle = doc["summary"][0]
    assert all(r["accuracy"] <= oracle["accuracy"] + 1e-12 for r in doc["summary"])
    assert any(n.startswith("task prior") for n in names)
    for r in doc["summary"]:
        lo, hi = r["accuracy_ci"]
        assert lo <= r["accuracy"] <= hi, r["router"]
    per_task = {r["router"]: r for r in doc["per_task"]["accuracy"]}
    assert {"oracle", "task prior", "prefill router (argmax)", "prefill (tiny:L1.mean) (argmax)"} <= set(per_task) and doc["ood"] is None
    assert "Per task: accuracy" in out.read_bytes("report.md").decode()


def test_routerdc_report_has_ood_tasks_expected_accuracy_and_no_costs(routerdc_pipeline):
    ckpt = RouterCheckpoint.load(Storage(routerdc_pipeline["train"]["router"]))
    assert ckpt.meta["train"]["targets"] == "expected" and ckpt.costs is None
    # calibrated on the validation rows: the fitted loss there can only go down
    assert len(ckpt.calibration["scale"]) == 7 and ckpt.meta["calibration"]["val_bce_after"] <= ckpt.meta["calibration"]["val_bce_before"] + 1e-9
    # OOD queries are never trained on: train + val + test rows leave them out
    assert ckpt.meta["rows"]["ood"] > 0
    out = Storage(routerdc_pipeline["report"]["uri"])
    assert not out.exists("curves.png")
    doc = json.loads(out.read_bytes("report.json"))
    for evaluation in (doc, doc["ood"]):
        rows = {r["router"].split(":")[0].split(" [")[0]: r for r in evaluation["summary"]}
        assert np.isnan(rows["oracle"]["cost"]) and rows["oracle"]["expected_accuracy_ci"] is not None
        assert rows["oracle"]["expected_accuracy"] >= rows["best single"]["expected_accuracy"]
    ood_tasks = {"MATH_prealgebra", "ceval", "javascript", "mbpp"}
    table = doc["per_task"]["expected_accuracy"]
    columns = set(table[0])
    assert {"router", "ID average", "OOD average"} <= columns and columns & ood_tasks
    assert not columns & {"train", "test", "ood"}
    oracle = next(r for r in table if r["router"] == "oracle")
    assert all(oracle[t] >= r[t] - 1e-12 for r in table for t in columns - {"router"})
    assert "Out-of-distribution tasks" in out.read_bytes("report.md").decode()


def test_router_api_matches_shard_features_and_cli(pipeline):
    uri = pipeline["train"]["router"]
    router = Router.load(uri)
    ckpt = router.checkpoint
    store = Storage(str(pipeline["store"]))
    from prefillray.corpus import load_corpus
    from prefillray.runtime import plain

    corpus = load_corpus(plain(pipeline["cfg"].data))
    where = store.child("activations", ckpt.encoders["tiny"]["key"], corpus.key)
    ids, feats = load_features(where, [b.split(":")[1] for b in ckpt.blocks], split="test")
    texts = corpus.queries.set_index("query_id").loc[ids["query_id"][:4], "text"].tolist()
    from_shards = ckpt.predict({b: feats[b.split(":")[1]][:4] for b in ckpt.blocks})
    np.testing.assert_allclose(router.predict(texts), from_shards, atol=2e-3)
    decisions = router.route(texts, policy="tolerance", param=0.05)
    assert all(d.model in ckpt.targets and d.expected_cost is not None for d in decisions)

    done = subprocess.run([sys.executable, "-m", "prefillray.cli", "route", "--checkpoint", uri, "--policy", "argmax", texts[0]],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert line["model"] == ckpt.targets[int(np.argmax(from_shards[0]))]


def test_checkpoint_with_a_pickle_is_refused(tmp_path, pipeline):
    where = Storage(str(tmp_path / "evil"))
    src = Storage(pipeline["train"]["router"])
    where.write_bytes_atomic(src.read_bytes("router.json"), "router.json")

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    where.write_bytes_atomic(pickle.dumps(Boom()), "trunk.safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        RouterCheckpoint.load(where)
    assert not (tmp_path / "pwned").exists()


def test_checkpoint_refuses_features_of_another_encoder_or_layer_set(pipeline):
    ckpt = RouterCheckpoint.load(Storage(pipeline["train"]["router"]))
    first = ckpt.blocks[0]
    width = len(ckpt.transforms[first].mean)
    with pytest.raises(CheckpointError, match=r"missing \['tiny:"):
        ckpt.predict({first: np.zeros((2, width), np.float32)})
    with pytest.raises(CheckpointError, match="feature widths"):
        ckpt.predict({b: np.zeros((2, width + 3), np.float32) for b in ckpt.blocks})


def test_ddp_two_workers_reach_the_loss_of_one(ray_local, tmp_path):
    """Real DDP (gloo, 2 Ray Train workers) against 1 worker on the same learnable data."""
    import ray

    from prefillray.training import TrainConfig, fit_trunk
    from prefillray.trunk import TrunkConfig

    rng = np.random.default_rng(0)
    w = rng.normal(size=(16, 3))

    def examples(n):
        x = rng.normal(size=(n, 16)).astype(np.float32)
        y = (x @ w + 0.3 * rng.normal(size=(n, 3)) > 0).astype(np.float32)
        return ray.data.from_numpy(x).zip(ray.data.from_numpy(y)).map_batches(
            lambda b: {"x": b["data"], "y": b["data_1"], "mask": np.ones_like(b["data_1"])}).materialize()

    train_ds, val_ds = examples(1024), examples(256)
    trunk = TrunkConfig(16, 3, (32,), 0.0)
    losses = {}
    for workers in (1, 2):
        cfg = TrainConfig(hidden=(32,), dropout=0.0, lr=3e-3, batch_size=64, max_epochs=15, patience=15, seeds=(0,), num_workers=workers)
        result = fit_trunk(train_ds, val_ds, trunk, cfg, Storage(str(tmp_path / f"w{workers}")), f"ddp-{workers}")
        (h,) = result.history
        assert h["world_size"] == workers
        losses[workers] = h["best_val_loss"]
    assert losses[1] < 0.4 and losses[2] < 0.4  # both learn (chance is ln 2 ≈ 0.69)
    assert abs(losses[2] - losses[1]) / losses[1] < 0.15


def test_sweep_never_sees_test_and_its_best_config_is_retrained(pipeline):
    from prefillray.corpus import load_corpus
    from prefillray.runtime import plain
    from prefillray.stages import tune

    cfg = pipeline["cfg"].copy()
    with open_dict(cfg):
        cfg.tune.num_samples = 3
        cfg.tune.max_epochs = 3
        cfg.tune.grace_period = 1
    result = tune.run(cfg)
    corpus = load_corpus(plain(cfg.data))
    # every row the trials saw is a training-split row; together they are the whole training split
    assert result["validation_ids"] == len(corpus.split_indices("train"))
    trials = Storage(result["uri"])
    assert trials.exists("trials.parquet") and trials.exists("score_vs_layer.png")
    ranking = pipeline["probe"]["ranking"]["tiny"]
    allowed = {f"tiny:{f}" for fs in ranking.values() for f in fs[: cfg.tune.top_k]}
    assert set(result["best"]["blocks"]) <= allowed  # pre-screened candidates only

    retrained = train.run(tune.best_config(cfg, result))
    ckpt = RouterCheckpoint.load(Storage(retrained["router"]))
    assert ckpt.blocks == result["best"]["blocks"]
    assert list(ckpt.trunk.hidden) == result["best"]["hidden"]
    assert ckpt.meta["train"]["lr"] == pytest.approx(result["best"]["lr"])
