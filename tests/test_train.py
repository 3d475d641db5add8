"""The train stage on a tiny hand-written set (16 medical/code rows, 32 tokens, a few steps on CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pytest
import torch
import yaml

from trainer.config import ACCELERATE_DIR, HARDWARE_DIR, load_config, profile_path
from trainer.errors import ConfigError, InputError, StageError
from trainer.models import resolve_model
from trainer.rundir import RunDir, run_stage
from trainer.train import (
    STAGE,
    launch_command,
    make_plan,
    resolve_precision,
    select_columns,
    split_by_query,
)

from .train_fixtures import FAKE_MINE, TINY, rows

REPO = Path(__file__).resolve().parents[1]
NO_VALIDATION = ("train.val_fraction=0",)


def cfg_for(run_dir, *extra):
    return load_config(None, [*TINY, f"run.dir={run_dir}", *extra])


def train(run_dir, *extra):
    cfg = cfg_for(run_dir, *extra)
    rd = RunDir(cfg.run.dir)
    run_stage(FAKE_MINE, cfg, rd)
    return run_stage(STAGE, cfg, rd)


def load_model(path, **kwargs):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", **kwargs)


def gaps(model, data):
    """Per query: cos(query, positive) - max cos(query, negatives)."""
    out = []
    for row in data:
        negs = [v for k, v in row.items() if k.startswith("negative_")]
        q, p, *n = model.encode([row["anchor"], row["positive"], *negs], normalize_embeddings=True,
                                convert_to_tensor=True)
        out.append(float(q @ p) - max(float(q @ x) for x in n))
    return torch.tensor(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("train-run")
    # No validation here: the full schedule, every row (validation: the saturated and lr sweep tests).
    outcome = train(run_dir, *NO_VALIDATION)
    return run_dir, outcome


def test_training_moves_queries_toward_their_positives(trained):
    run_dir, outcome = trained
    assert outcome.action == "ran"
    counts = outcome.manifest["counts"]
    assert counts["rows"] == 16 and counts["val_queries"] == 0
    assert counts["steps"] == 6 and counts["negatives_per_row"] == 3  # 2 batches x 3 epochs
    assert counts["loss"] == "mnrl+matryoshka" and counts["precision"] == "fp32"
    assert counts["final_loss"] is not None and counts["best_val_ndcg@10"] is None
    assert counts["samples_per_s"] > 0 and counts["train_seconds"] > 0

    model_dir = run_dir / "stages/train/model"
    args = json.loads((model_dir / "training_args.json").read_text())
    assert args["learning_rate"] == 1e-4 and args["per_device_train_batch_size"] == 8
    assert args["batch_sampler"] == "no_duplicates" and args["seed"] == 42
    log = json.loads((run_dir / "stages/train/train_log.json").read_text())
    assert [e["step"] for e in log["log_history"] if "loss" in e] == [1, 2, 4, 6]

    data = rows(3)
    base = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    tuned = load_model(model_dir)
    assert tuned.max_seq_length == 256  # trained at 32 tokens, served at the model's own limit
    before, after = gaps(base, data), gaps(tuned, data)
    assert after.mean() > before.mean() + 0.05, (before, after)  # measured: 0.39 -> 0.48
    assert after.median() > before.median() + 0.05, (before, after)


def test_rerun_is_a_noop(trained):
    run_dir, outcome = trained
    again = run_stage(STAGE, cfg_for(run_dir, *NO_VALIDATION), RunDir(run_dir))
    assert again.action == "skipped" and again.manifest == outcome.manifest


def test_matryoshka_truncated_embeddings_still_rank_the_positive_first(trained):
    run_dir, _ = trained
    model = load_model(run_dir / "stages/train/model", truncate_dim=64)
    assert model.encode(["x"]).shape == (1, 64)
    for row in rows(3):  # the positive beats the row's mined negatives at 64 of 384 dimensions
        texts = [row["positive"], row["negative_1"], row["negative_2"], row["negative_3"]]
        q, d = model.encode([row["anchor"]], normalize_embeddings=True), model.encode(texts, normalize_embeddings=True)
        assert (q @ d.T).argmax() == 0, row["anchor"]


def test_hard_negatives_only_loss_ignores_other_rows():
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from trainer.losses import CachedHardNegativesOnlyLoss, HardNegativesOnlyLoss

    model = load_model(resolve_model("sentence-transformers/all-MiniLM-L6-v2"))
    g = torch.Generator().manual_seed(0)
    q, p, n1, n2 = (torch.randn(6, 384, generator=g) for _ in range(4))
    hn, mnrl = HardNegativesOnlyLoss(model, scale=50), MultipleNegativesRankingLoss(model, scale=50)

    # by hand: cross-entropy of each query over [own positive, own negatives]
    cos = torch.nn.functional.cosine_similarity
    logits = torch.stack([cos(q, p), cos(q, n1), cos(q, n2)], dim=1) * 50
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(6, dtype=torch.long))
    assert torch.allclose(hn.compute_loss_from_embeddings([q, p, n1, n2], None), expected, atol=1e-5)

    # another row's positive copied onto query 0 is an in-batch negative for MNRL, invisible here
    p2 = p.clone()
    p2[1] = q[0] * 3
    assert torch.allclose(hn.compute_loss_from_embeddings([q, p2, n1, n2], None),
                          torch.nn.functional.cross_entropy(
                              torch.stack([cos(q, p2), cos(q, n1), cos(q, n2)], 1) * 50,
                              torch.zeros(6, dtype=torch.long)), atol=1e-5)
    assert hn.compute_loss_from_embeddings([q[:1], p2[:1], n1[:1], n2[:1]], None) == pytest.approx(
        float(hn.compute_loss_from_embeddings([q[:1], p[:1], n1[:1], n2[:1]], None)))
    assert mnrl.compute_loss_from_embeddings([q, p2, n1, n2], None) > mnrl.compute_loss_from_embeddings(
        [q, p, n1, n2], None) + 1

    # the cached form gives the same value and gradients, chunked
    cached = CachedHardNegativesOnlyLoss(model, scale=50, mini_batch_size=4)
    reps = [[t[:4].clone().requires_grad_(), t[4:].clone().requires_grad_()] for t in (q, p, n1, n2)]
    value = cached.calculate_loss(reps, None, with_backward=True)
    assert torch.allclose(value, expected, atol=1e-5)
    full = [t.clone().requires_grad_() for t in (q, p, n1, n2)]
    hn.compute_loss_from_embeddings(full, None).backward()
    assert torch.allclose(torch.cat([r.grad for r in reps[0]]), full[0].grad, atol=1e-6)


def test_hard_negatives_only_training_run(tmp_path):
    outcome = train(tmp_path, "train.hard_negatives_only=true", "train.epochs=1", "train.val_fraction=0",
                    "train.loss=cached_mnrl", "train.mini_batch_size=4")
    counts = outcome.manifest["counts"]
    assert counts["loss"] == "cached_mnrl+hard_negatives_only+matryoshka"
    assert counts["steps"] == 2 and counts["val_queries"] == 0 and counts["best_val_ndcg@10"] is None
    args = json.loads((tmp_path / "stages/train/model/training_args.json").read_text())
    assert args["batch_sampler"] == "batch_sampler"  # no in-batch negatives: duplicates do not matter


def test_killed_training_resumes_to_the_same_weights(tmp_path):
    """SIGKILL after the step-2 checkpoint; the re-run resumes from it and ends with the same weights."""
    extra = ["train.val_fraction=0", "train.epochs=2"]  # no best-model pick: the final state is the last step
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.train_fixtures import FAKE_MINE, TINY
        from trainer.config import load_config
        from trainer.rundir import RunDir, run_stage
        from trainer.train import STAGE
        cfg = load_config(None, TINY + {extra!r} + ["run.dir=" + sys.argv[1]])
        run_stage(FAKE_MINE, cfg, RunDir(cfg.run.dir))
        print(run_stage(STAGE, cfg, RunDir(cfg.run.dir)).action)
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run(run_dir, crash=None):
        e = {**env, "DOMAIN_EMBED_CRASH_AT": crash} if crash else env
        return subprocess.run([sys.executable, "-c", script, str(run_dir)], cwd=REPO, env=e,
                              capture_output=True, text=True, timeout=300)

    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    res = run(clean)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run(crashed, crash="train.step.2")
    assert res.returncode == -9, res.stderr[-3000:]
    work = crashed / "stages/train/_work/run/checkpoints"
    assert (work / "checkpoint-2/trainer_state.json").is_file() and not (work / "checkpoint-4").exists()
    assert json.loads((crashed / "stages/train/manifest.json").read_text())["status"] == "running"

    res = run(crashed)
    assert res.returncode == 0 and res.stdout.strip().endswith("resumed"), res.stderr[-3000:]
    m_clean = json.loads((clean / "stages/train/manifest.json").read_text())
    m_crashed = json.loads((crashed / "stages/train/manifest.json").read_text())
    assert m_crashed["counts"]["resumed_from_step"] == 2 and m_crashed["attempts"] == 2
    assert m_crashed["counts"]["steps"] == m_clean["counts"]["steps"] == 4
    assert m_crashed["counts"]["final_loss"] == pytest.approx(m_clean["counts"]["final_loss"], abs=1e-4)

    from safetensors.torch import load_file

    a = load_file(str(clean / "stages/train/model/model.safetensors"))
    b = load_file(str(crashed / "stages/train/model/model.safetensors"))
    assert a.keys() == b.keys()
    base = load_file(str(Path(resolve_model("sentence-transformers/all-MiniLM-L6-v2")) / "model.safetensors"))
    assert any(not torch.equal(a[k], base[k]) for k in a if k in base)  # it did train
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_a_damaged_checkpoint_is_moved_aside_and_training_resumes_from_the_one_before(tmp_path):
    """A truncated model.safetensors in the newest checkpoint (a full disk, a bad copy) must not make every
    later run die: it is moved to <run>/archive/ and training resumes from the checkpoint before it."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from tests.train_fixtures import FAKE_MINE, TINY
        from trainer.config import load_config
        from trainer.logs import setup_console
        from trainer.rundir import RunDir, run_stage
        from trainer.train import STAGE
        setup_console()
        cfg = load_config(None, TINY + ["train.val_fraction=0", "train.epochs=2", "run.dir=" + sys.argv[1]])
        run_stage(FAKE_MINE, cfg, RunDir(cfg.run.dir))
        print(run_stage(STAGE, cfg, RunDir(cfg.run.dir)).action)
    """)

    def run(crash=None):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"DOMAIN_EMBED_CRASH_AT": crash} if crash else {})}
        return subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)

    res = run(crash="train.step.4")  # killed after saving its last checkpoint, before the final model
    assert res.returncode == -9, res.stderr[-3000:]
    ckpt = tmp_path / "stages/train/_work/run/checkpoints/checkpoint-4"
    weights = ckpt / "model.safetensors"
    size = weights.stat().st_size
    with weights.open("r+b") as fh:
        fh.truncate(size // 2)

    res = run()
    assert res.returncode == 0 and res.stdout.strip().endswith("resumed"), res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if "damaged checkpoint" in line]
    assert len(lines) == 1 and "checkpoint-4 (model.safetensors:" in lines[0], res.stderr[-3000:]
    assert lines[0].endswith("resuming from checkpoint-2")
    counts = json.loads((tmp_path / "stages/train/manifest.json").read_text())["counts"]
    assert counts["resumed_from_step"] == 2 and counts["steps"] == 4
    kept = list((tmp_path / "archive").glob("train-run-checkpoint-4-damaged-*/model.safetensors"))
    assert len(kept) == 1 and kept[0].stat().st_size == size // 2  # moved aside as it was, not deleted


def test_lr_sweep_keeps_the_best_by_validation_ndcg(tmp_path):
    outcome = train(tmp_path, "train.lr_sweep=[1e-6, 1e-4]", "train.epochs=1")
    counts = outcome.manifest["counts"]
    assert counts["rows"] == 14 and counts["val_queries"] == 2  # 10% of 16 queries held out, by query
    args = json.loads((tmp_path / "stages/train/model/training_args.json").read_text())
    assert args["load_best_model_at_end"] is True and args["metric_for_best_model"] == "eval_val_selection"
    assert set(counts["lr_sweep"]) == {"1e-06", "0.0001"}
    best = max(counts["lr_sweep"].values())
    assert counts["best_val_ndcg@10"] == best and counts["lr_sweep"][f"{counts['lr']:g}"] == best
    log = json.loads((tmp_path / "stages/train/train_log.json").read_text())
    assert [r["lr"] for r in log["lr_sweep"]] == [1e-6, 1e-4]
    assert any("eval_val_cosine_ndcg@10" in e for e in log["log_history"])
    assert (tmp_path / "stages/train/model/model.safetensors").is_file()


def test_a_saturated_validation_set_keeps_the_last_checkpoint_not_the_first(tmp_path):
    """Two held-out queries score a perfect nDCG@10 at every checkpoint: the tie goes to the trained model."""
    counts = train(tmp_path, "train.epochs=2").manifest["counts"]
    log = json.loads((tmp_path / "stages/train/train_log.json").read_text())
    scores = [e["eval_val_cosine_ndcg@10"] for e in log["log_history"] if "eval_val_cosine_ndcg@10" in e]
    assert len(scores) >= 2 and len(set(scores)) == 1  # every validation ties
    assert counts["best_checkpoint_step"] == counts["steps"] > 2
    assert counts["best_val_ndcg@10"] == round(scores[0], 6)


def test_two_cpu_processes(tmp_path):
    """accelerate launch with two CPU ranks (gloo); in-batch negatives gathered across ranks."""
    outcome = train(tmp_path, "train.num_processes=2", "train.batch_size=2", "train.epochs=1")
    counts = outcome.manifest["counts"]
    assert counts["world_size"] == 2 and counts["steps"] > 0
    assert (tmp_path / "stages/train/model/model.safetensors").is_file()
    args = json.loads((tmp_path / "stages/train/model/training_args.json").read_text())
    assert args["per_device_train_batch_size"] == 2


def test_bad_settings_are_actionable_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"exceed the model's embedding dimension of 384"):
        train(tmp_path / "a", "train.matryoshka_dims=[512, 128]")
    with pytest.raises(ConfigError, match=r"the mine stage wrote 3 negatives"):
        train(tmp_path / "b", "train.num_negatives=5")
    with pytest.raises(ConfigError, match="val_fraction"):
        train(tmp_path / "c", "train.lr_sweep=[1e-5, 2e-5]", "train.val_fraction=0")
    cfg = cfg_for(tmp_path / "d")
    with pytest.raises(StageError, match="needs the output of 'mine'"):
        run_stage(STAGE, cfg, RunDir(cfg.run.dir))


def test_mine_output_without_anchor_is_an_input_error():
    ds = datasets.Dataset.from_dict({"query": ["q"], "positive": ["p"]})
    with pytest.raises(InputError, match="no anchor column"):
        select_columns(ds, None)
    ds = datasets.Dataset.from_list(rows(3))
    selected, negs = select_columns(ds, 2)
    assert selected.column_names == ["anchor", "positive", "negative_1", "negative_2"] and len(negs) == 2


def test_validation_holds_out_whole_queries():
    data = [{"anchor": f"q{i % 10}", "positive": f"p{i}"} for i in range(40)]  # 10 queries x 4 positives
    train_rows, val_rows = split_by_query(datasets.Dataset.from_list(data), 0.2, 500, seed=1)
    assert len(set(val_rows["anchor"])) == 2 and len(val_rows) == 8
    assert not set(train_rows["anchor"]) & set(val_rows["anchor"])
    again = split_by_query(datasets.Dataset.from_list(data), 0.2, 500, seed=1)[1]
    assert again["anchor"] == val_rows["anchor"]  # seeded


def test_plan_scales_batch_and_epochs_to_the_data():
    t = load_config().train
    assert make_plan(100, t).batch_size == 16
    assert make_plan(1000, t).batch_size == 31
    assert make_plan(1999, t).batch_size == 62
    assert make_plan(5000, t).batch_size == t.max_batch_size == 64
    assert make_plan(10, t).batch_size == 10  # never more than the data
    assert make_plan(5000, t).epochs == 3 and make_plan(60_000, t).epochs == 2  # recipe: 1-2 for large sets
    assert make_plan(100, load_config(None, ["train.batch_size=48"]).train).batch_size == 48
    plan = make_plan(2000, t)
    assert plan.steps_per_epoch == 32 and plan.total_steps == 96 and plan.eval_steps == 8


def test_mixed_precision_falls_back_to_fp32_without_cuda(caplog):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert resolve_precision("auto") == "fp32"
    with caplog.at_level("WARNING", logger="trainer"):
        assert resolve_precision("fp16") == "fp32"
        assert resolve_precision("bf16") == "fp32"
    assert "needs a CUDA GPU" in caplog.text


def test_hardware_profiles_load():
    profiles = {p.stem: p for p in HARDWARE_DIR.glob("*.yaml")}
    assert set(profiles) == {"cpu", "t4", "a100", "multi-gpu"}
    loaded = {name: load_config(path).train for name, path in profiles.items()}
    for name, t in loaded.items():
        assert t.profile == name
        assert profile_path(name) == profiles[name]
    assert loaded["cpu"].precision == "fp32" and loaded["cpu"].max_seq_length == 128
    assert loaded["t4"].precision == "fp16" and loaded["t4"].loss == "cached_mnrl"
    assert loaded["a100"].precision == "bf16" and loaded["a100"].max_batch_size >= 256
    multi = loaded["multi-gpu"]
    assert multi.num_processes > 1 and multi.gather_across_devices
    assert multi.accelerate_config is None  # the shipped multi-gpu.yaml is the default with CUDA
    with pytest.raises(ConfigError, match="no such hardware profile"):
        profile_path("tpu")


def test_accelerate_configs_and_launch_command(tmp_path):
    for path in ACCELERATE_DIR.glob("*.yaml"):
        conf = yaml.safe_load(path.read_text())
        assert conf["compute_environment"] == "LOCAL_MACHINE" and conf["num_machines"] == 1
    cpu = yaml.safe_load((ACCELERATE_DIR / "cpu-2proc.yaml").read_text())
    assert cpu["use_cpu"] is True and cpu["distributed_type"] == "MULTI_GPU"  # MULTI_CPU runs one process
    if torch.cuda.is_available():
        pytest.skip("the CPU launch command is checked where there is no GPU")
    cmd = launch_command(load_config(None, ["train.num_processes=2"]), tmp_path / "job.json")
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[4] == str(ACCELERATE_DIR / "cpu-2proc.yaml")
    assert cmd[-3:] == ["-m", "trainer.train", str(tmp_path / "job.json")]
    cmd = launch_command(load_config(None, ["train.num_processes=2", "train.launcher=torchrun"]), tmp_path / "j")
    assert "--standalone" in cmd and "--nproc_per_node=2" in cmd
