"""The export stage on the real base model (standing in for a trained one): ONNX fp32 + int8, parity checks.

A tiny "train" stage copies all-MiniLM-L6-v2 into ``stages/train/model`` so manifests and fingerprints
are real; the export stage then runs through ``run_stage`` as the pipeline runs it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer import export
from trainer.config import load_config
from trainer.errors import InputError, StageError
from trainer.export import (
    FP32_FILE,
    OPENVINO_FILE,
    OPENVINO_INT8_FILE,
    PYTORCH,
    PYTORCH_BF16,
    SERVING_FILE,
    STAGE,
    Candidate,
    choose_backend,
    cosines,
    int8_file_name,
    load_onnx,
    load_retrieval_task,
    pick_int8_config,
)
from trainer.models import resolve_model
from trainer.paths import data_dir
from trainer.rundir import RunDir, Stage, run_stage

BASE = "sentence-transformers/all-MiniLM-L6-v2"
SENTENCES = [
    "Aspirin irreversibly inhibits cyclooxygenase and reduces platelet aggregation.",
    "The court held that the statute of limitations had expired before the claim was filed.",
    "A Python generator yields values lazily, one at a time.",
    "short",
]


def _copy_base(ctx):
    dest = ctx.dir / "model"
    shutil.copytree(resolve_model(BASE, offline=True), dest, ignore=shutil.ignore_patterns(".gitattributes"))
    return {"copied": True}


FAKE_TRAIN = Stage(name="train", run=_copy_base, sections=("model",), help="test stand-in: the base model")


def _parity_settings(tmp_path: Path) -> list[str]:
    """Real passages: SciFact when the shared data is there, else CPython's documentation topics."""
    if (data_dir() / "scifact" / "corpus.jsonl").is_file():
        return []
    from pydoc_data.topics import topics

    corpus = tmp_path / "passages.jsonl"
    with corpus.open("w") as fh:
        for name, text in sorted(topics.items()):
            fh.write(json.dumps({"_id": name, "title": name, "text": text[:2000]}) + "\n")
    return [f"export.parity_corpus={corpus}"]


def make_cfg(run_dir: Path, *extra: str):
    return load_config(None, [f"run.dir={run_dir}", *_parity_settings(run_dir.parent), *extra])


def run_export(cfg):
    rd = RunDir(cfg.run.dir)
    run_stage(FAKE_TRAIN, cfg, rd)
    return run_stage(STAGE, cfg, rd)


def small_retrieval() -> list[str]:
    """The lossy candidates' nDCG check on a slice of AILA statutes (10 queries: it exercises the check; the
    full check is the slow test's), or off without the shared data."""
    if not (data_dir() / "aila_statutes").is_dir():
        return ["export.retrieval_check=off"]
    return ["export.retrieval_check=data:aila_statutes", "export.retrieval_max_queries=10",
            "export.retrieval_max_corpus=20", "export.max_ndcg_drop=5"]


def fastest(name: str):
    """A CPU where ``name`` is the fastest candidate (timing stands in for the real one)."""
    return lambda models, *a, **k: {n: 90.0 if n == name else 50.0 if n == PYTORCH else 40.0 for n in models}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One export of the base model: 200 parity passages, int8 for this CPU (and bf16 / OpenVINO where they
    run here), their nDCG on a slice of AILA statutes."""
    root = tmp_path_factory.mktemp("export")
    cfg = make_cfg(root / "run", "export.parity_passages=200", *small_retrieval(), "export.speed_passages=32",
                   "export.speed_repeats=1")
    outcome = run_export(cfg)
    return cfg, outcome


def test_export_writes_a_sentence_transformers_folder_with_fp32_and_int8(exported):
    cfg, outcome = exported
    assert outcome.action == "ran"
    m = outcome.manifest
    assert m["status"] == "complete"
    out = Path(cfg.run.dir) / "stages" / "export" / "onnx"
    expected_int8 = int8_file_name(pick_int8_config())
    onnx_files = {k: v for k, v in m["counts"]["files"].items() if not k.startswith("openvino")}
    assert onnx_files == {"fp32": FP32_FILE, "int8": expected_int8}
    assert (out / FP32_FILE).is_file() and (out / expected_int8).is_file()
    modules = [mod["type"].rsplit(".", 1)[-1] for mod in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    assert not (out / "model.safetensors").exists()  # ONNX only, no PyTorch weights duplicated
    assert not (Path(cfg.run.dir) / "stages" / "export" / "_work").exists()
    # the CPU decides the int8 config, and the manifest says which
    has_vnni = "avx512_vnni" in export.cpu_flags()
    assert m["counts"]["int8_config"] == "avx512_vnni" if has_vnni else m["counts"]["int8_config"] in {"avx2", "arm64"}
    assert m["counts"]["cpu_avx512_vnni"] == ("avx512_vnni" in export.cpu_flags())
    assert m["counts"]["cpu_flags"] == export.cpu_features() and "avx2" in m["counts"]["cpu_flags"]


def test_the_fastest_passing_candidate_is_recorded_and_served(exported):
    from trainer.serve import pick_onnx_file

    cfg, outcome = exported
    serving = outcome.manifest["counts"]["serving"]
    out = Path(cfg.run.dir) / "stages" / "export" / "onnx"
    assert json.loads((out / SERVING_FILE).read_text())["why"] == serving["why"]
    speeds = serving["sentences_per_s"]
    rows = {r["name"]: r for r in outcome.manifest["counts"]["candidates"]}
    ran = {name for name, r in rows.items() if r["run"]}
    assert set(speeds) == ran and {PYTORCH, "fp32", "int8"} <= ran and min(speeds.values()) > 0
    # every candidate is accounted for: measured, or skipped with the reason
    assert set(rows) == {PYTORCH, "fp32", "int8", "bf16", "openvino", "openvino_int8"}
    assert {n: r["why"] for n, r in rows.items() if not r["run"]} == serving["skipped"]
    assert serving["cpu"] == export.cpu_name() and serving["speed_passages"] == 32
    assert serving["cpu_flags"] == export.cpu_features()
    # the recorded choice is the rule applied to the recorded speeds
    best, _ = choose_backend([Candidate(PYTORCH, None, speeds[PYTORCH])] + [
        Candidate(n, n, speeds[n], rows[n]["passed_parity"]) for n in ran if n != PYTORCH])
    assert (serving["backend"], serving["dtype"]) == export.backend_of(best.name)
    expected = {PYTORCH: PYTORCH, "bf16": PYTORCH_BF16}.get(best.name, serving["file"])
    assert pick_onnx_file(out) == expected
    assert pick_onnx_file(out, int8=True).endswith(f"_{pick_int8_config()}.onnx")  # explicit choices still win
    assert pick_onnx_file(out, file_name=FP32_FILE) == FP32_FILE


def test_choose_backend_keeps_the_fastest_that_passed_parity():
    # the Intel Xeon numbers: int8 fastest, ONNX fp32 slower than PyTorch
    candidates = [Candidate(PYTORCH, None, 33.4), Candidate("fp32", FP32_FILE, 27.5),
                  Candidate("int8", "onnx/model_qint8_avx512_vnni.onnx", 41.7)]
    best, why = choose_backend(candidates)
    assert best.name == "int8" and "41.7 sentences/s = 1.25x PyTorch" in why


def test_choose_backend_never_picks_a_candidate_that_failed_parity():
    candidates = [Candidate(PYTORCH, None, 33.4), Candidate("fp32", FP32_FILE, 36.0),
                  Candidate("int8", "onnx/int8.onnx", 90.0, False, "nDCG@10 drop 1.20 > 0.5 points")]
    best, why = choose_backend(candidates)
    assert best.name == "fp32"
    assert "not eligible: int8 (nDCG@10 drop 1.20 > 0.5 points)" in why


def test_choose_backend_falls_back_to_pytorch_when_nothing_is_faster():
    candidates = [Candidate(PYTORCH, None, 33.4), Candidate("fp32", FP32_FILE, 33.4),  # a tie keeps PyTorch
                  Candidate("int8", "onnx/int8.onnx", 50.0, False, "retrieval check skipped, so not judged")]
    best, why = choose_backend(candidates)
    assert best.name == PYTORCH and best.file is None
    assert "no candidate passing parity was faster than PyTorch's 33.4 sentences/s" in why
    with pytest.raises(ValueError, match="PyTorch reference"):
        choose_backend(candidates[1:])


def test_pytorch_fastest_is_recorded_and_served(tmp_path, monkeypatch):
    from trainer.serve import Embedder, pick_onnx_file

    cfg = make_cfg(tmp_path / "run", "export.parity_passages=12", "export.int8=false", "export.bf16=false",
                   "export.openvino=false")
    # a CPU where ONNX Runtime is slower than PyTorch
    monkeypatch.setattr(export, "time_encodes", lambda models, *a, **k: {n: 50.0 if n == PYTORCH else 40.0
                                                                          for n in models})
    serving = run_export(cfg).manifest["counts"]["serving"]
    assert serving["backend"] == PYTORCH and serving["sentences_per_s"] == {PYTORCH: 50.0, "fp32": 40.0}
    assert "faster than PyTorch's 50.0" in serving["why"]
    out = Path(cfg.run.dir) / "stages" / "export" / "onnx"
    assert pick_onnx_file(out) == PYTORCH
    embedder = Embedder(out, PYTORCH)
    assert type(embedder.model[0].auto_model).__module__.startswith("transformers")  # PyTorch, not ONNX Runtime
    got, _ = embedder.encode(SENTENCES)
    assert cosines(got, load_onnx(out).encode(SENTENCES)).min() >= 0.999


def test_bf16_is_a_candidate_where_the_cpu_has_it(exported):
    counts = exported[1].manifest["counts"]
    row = next(r for r in counts["candidates"] if r["name"] == "bf16")
    if export.bf16_unavailable() is not None:
        assert row == {"name": "bf16", "run": False, "why": export.bf16_unavailable()}
        assert "avx512_bf16" in row["why"]
        return
    assert row["run"] and row["sentences_per_s"] > 0
    assert 0.99 < counts["bf16_min_cosine"] < 1.0  # close to PyTorch fp32, not equal: judged by retrieval
    if counts["retrieval_check"].startswith("skipped"):
        assert row["passed_parity"] is False and "not judged" in row["why"]
    else:
        assert counts["bf16_ndcg_drop_points"] == pytest.approx(
            (counts["torch_ndcg@10"] - counts["bf16_ndcg@10"]) * 100, abs=1e-2)
        assert row["passed_parity"] == (counts["bf16_ndcg_drop_points"] <= 5)


def test_bf16_chosen_is_recorded_and_served_in_bf16(tmp_path, monkeypatch):
    import torch

    from trainer.serve import Embedder, backend_and_precision, pick_onnx_file

    if export.bf16_unavailable() is not None:
        pytest.skip(f"PyTorch bf16 is not a candidate on this CPU: {export.bf16_unavailable()}")
    if not (data_dir() / "aila_statutes").is_dir():
        pytest.skip("bf16 is only eligible after its retrieval check, which needs the shared AILA statutes set")
    cfg = make_cfg(tmp_path / "run", "export.parity_passages=12", "export.int8=false", "export.openvino=false",
                   *small_retrieval())
    monkeypatch.setattr(export, "time_encodes", fastest("bf16"))
    counts = run_export(cfg).manifest["counts"]
    serving = counts["serving"]
    assert (serving["backend"], serving["dtype"]) == (PYTORCH, "bfloat16")
    assert serving["why"].startswith("bf16: fastest that passed parity, 90.0 sentences/s = 1.80x PyTorch")
    out = Path(cfg.run.dir) / "stages" / "export" / "onnx"
    parity = json.loads((out.parent / "parity.json").read_text())
    assert parity["serving"]["dtype"] == "bfloat16" and parity["cpu_flags"] == export.cpu_features()
    # serve loads what the stage measured: the trained model in bf16, giving the stage's vectors
    assert pick_onnx_file(out) == PYTORCH_BF16
    embedder = Embedder(out, pick_onnx_file(out))
    assert backend_and_precision(embedder.file_name) == (PYTORCH, "bfloat16")
    assert next(embedder.model.parameters()).dtype == torch.bfloat16
    got, _ = embedder.encode(SENTENCES)
    measured = export.load_bf16(resolve_model(BASE, offline=True)).encode(SENTENCES)
    np.testing.assert_allclose(got, measured, atol=1e-6)
    fp32 = load_onnx(out).encode(SENTENCES)
    assert counts["bf16_min_cosine"] - 0.01 < cosines(got, fp32).min() < 1.0


def test_openvino_absent_is_skipped_with_the_reason(tmp_path, monkeypatch):
    """The optional backend missing (as in requirements.txt alone): the stage runs and says why."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` raises ImportError
    cfg = make_cfg(tmp_path / "run", "export.parity_passages=12", "export.int8=false", "export.bf16=false",
                   "export.speed_passages=8", "export.speed_repeats=1")
    counts = run_export(cfg).manifest["counts"]
    assert not any(k.startswith("openvino") for k in counts["files"])
    reason = counts["serving"]["skipped"]["openvino"]
    assert reason.startswith("optional backend not installed (ModuleNotFoundError")
    assert "requirements-openvino.txt" in reason
    assert counts["serving"]["skipped"]["openvino_int8"] == reason
    assert {"name": "openvino", "run": False, "why": reason} in counts["candidates"]
    why = counts["serving"]["why"]
    assert f"not run: openvino ({reason})" in why and "bf16 (export.bf16 is false)" in why
    assert not (Path(cfg.run.dir) / "stages/export/onnx/openvino").exists()


def test_openvino_candidates_are_judged_timed_and_served(tmp_path, monkeypatch):
    """With requirements-openvino.txt installed: fp32 by cosine, static int8 by retrieval; serve loads it."""
    from trainer.serve import Embedder, backend_and_precision, pick_onnx_file

    missing = export.openvino_unavailable(int8=True)
    if missing:
        pytest.skip(f"OpenVINO is an optional backend: {missing}")
    cfg = make_cfg(tmp_path / "run", "export.parity_passages=12", "export.bf16=false", *small_retrieval(),
                   "export.on_parity_failure=warn")
    monkeypatch.setattr(export, "time_encodes", fastest("openvino"))
    counts = run_export(cfg).manifest["counts"]
    assert counts["files"]["openvino"] == OPENVINO_FILE and counts["files"]["openvino_int8"] == OPENVINO_INT8_FILE
    assert counts["openvino_min_cosine"] >= 0.999
    assert 0.9 < counts["openvino_int8_min_cosine"] < 0.9999
    rows = {r["name"]: r for r in counts["candidates"]}
    assert rows["openvino"]["passed_parity"] is True and rows["openvino_int8"]["run"] is True
    serving = counts["serving"]
    assert (serving["backend"], serving["file"]) == ("openvino", OPENVINO_FILE)
    out = Path(cfg.run.dir) / "stages" / "export" / "onnx"
    assert pick_onnx_file(out) == OPENVINO_FILE
    embedder = Embedder(out, OPENVINO_FILE)
    assert backend_and_precision(embedder.file_name) == ("openvino", "fp32")
    got, _ = embedder.encode(SENTENCES)
    assert cosines(got, load_onnx(out).encode(SENTENCES)).min() >= 0.999
    # the folder on a machine without OpenVINO: serve falls back to ONNX fp32
    monkeypatch.setitem(sys.modules, "openvino", None)
    assert pick_onnx_file(out) == FP32_FILE


def test_fp32_parity_on_200_real_passages(exported):
    _, outcome = exported
    counts = outcome.manifest["counts"]
    assert counts["parity_passages"] == 200
    assert counts["fp32_min_cosine"] >= 0.999
    # the Matryoshka prefixes the server's `dimensions` return are checked too (train.matryoshka_dims)
    assert set(counts["fp32_min_cosine_by_dim"]) == {"384", "256", "128", "64"}
    assert min(counts["fp32_min_cosine_by_dim"].values()) >= 0.999
    assert counts["parity_ok"] is True and counts["warnings"] == []
    # int8 is recorded for information: close, but it does not reach fp32's parity
    assert 0.9 < counts["int8_min_cosine"] < counts["fp32_min_cosine"]
    parity = json.loads((Path(exported[0].run.dir) / "stages/export/parity.json").read_text())
    assert parity["fp32_min_cosine"] == counts["fp32_min_cosine"]


def test_int8_retrieval_check_is_recorded(exported):
    counts = exported[1].manifest["counts"]
    if counts["retrieval_check"].startswith("skipped"):
        pytest.skip("shared data absent: int8 retrieval check was off")
    assert counts["retrieval_queries"] == 10
    assert 0.0 < counts["torch_ndcg@10"] <= 1.0
    assert counts["int8_ndcg_drop_points"] == pytest.approx(
        (counts["torch_ndcg@10"] - counts["int8_ndcg@10"]) * 100, abs=1e-2)


def test_exported_folder_loads_with_the_onnx_backend_and_matches_torch(exported):
    from sentence_transformers import SentenceTransformer

    out = Path(exported[0].run.dir) / "stages" / "export" / "onnx"
    onnx = SentenceTransformer(str(out), backend="onnx", model_kwargs={"file_name": "onnx/model.onnx"})
    torch_model = SentenceTransformer(resolve_model(BASE, offline=True), device="cpu")
    a, b = onnx.encode(SENTENCES), torch_model.encode(SENTENCES)
    assert a.shape == b.shape == (len(SENTENCES), 384)
    assert cosines(a, b).min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)  # Normalize kept
    assert onnx.max_seq_length == torch_model.max_seq_length


def test_same_settings_are_a_noop(exported):
    cfg, first = exported
    again = run_stage(STAGE, cfg, RunDir(cfg.run.dir))
    assert again.action == "skipped"
    assert again.manifest["output_fingerprint"] == first.manifest["output_fingerprint"]


def test_load_onnx_names_missing_files(exported):
    out = Path(exported[0].run.dir) / "stages" / "export" / "onnx"
    with pytest.raises(InputError, match=r"model_O2\.onnx not found .*onnx/model\.onnx"):
        load_onnx(out, "onnx/model_O2.onnx")


def test_failed_parity_stops_the_stage_and_the_rerun_reuses_the_export(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path / "run", "export.parity_passages=12", "export.int8=false", "export.bf16=false",
                   "export.openvino=false")
    real = export.cosines
    monkeypatch.setattr(export, "cosines", lambda a, b: real(a, b) - 0.01)  # an export that drifted
    with pytest.raises(StageError, match=r"min cosine 0\.9\d+( at \d+ dimensions)? < export.min_cosine 0.999 "
                                         r"over 12 passages.*export.on_parity_failure=warn"):
        run_export(cfg)
    rd = RunDir(cfg.run.dir)
    m = rd.manifest("export")
    assert m["status"] == "failed" and "export.min_cosine 0.999" in m["error"] and "\n" not in m["error"]
    assert (rd.stage_dir("export") / "_work" / "onnx" / FP32_FILE).is_file()
    monkeypatch.setattr(export, "cosines", real)
    calls = []
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: calls.append(a))
    outcome = run_stage(STAGE, cfg, rd)
    assert outcome.action == "resumed" and calls == []  # the export was reused, not redone
    assert outcome.manifest["counts"]["files"] == {"fp32": FP32_FILE}
    assert outcome.manifest["counts"]["serving"]["skipped"]["openvino"] == "export.openvino is false"
    assert outcome.manifest["counts"]["fp32_min_cosine"] >= 0.999


def test_warn_mode_records_the_failure(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path / "run", "export.parity_passages=12", "export.int8=false", "export.bf16=false",
                   "export.openvino=false", "export.on_parity_failure=warn")
    real = export.cosines
    monkeypatch.setattr(export, "cosines", lambda a, b: real(a, b) - 0.01)
    counts = run_export(cfg).manifest["counts"]
    assert counts["parity_ok"] is False
    assert "does not reproduce PyTorch" in counts["warnings"][0]
    # a file that failed parity is never served, however fast
    assert counts["serving"]["backend"] == PYTORCH
    assert "not eligible: fp32 (min cosine" in counts["serving"]["why"]


def test_missing_trained_model_is_actionable(tmp_path):
    cfg = make_cfg(tmp_path / "run")
    rd = RunDir(cfg.run.dir)
    empty = Stage(name="train", run=lambda ctx: {}, sections=("model",))
    run_stage(empty, cfg, rd)
    with pytest.raises(StageError, match=r"needs train/model, which the train stage did not write.*train --force"):
        run_stage(STAGE, cfg, rd)


def test_export_needs_a_finished_train_stage(tmp_path):
    cfg = make_cfg(tmp_path / "run")
    with pytest.raises(StageError, match="needs the output of 'train'"):
        run_stage(STAGE, cfg, RunDir(cfg.run.dir))


def test_onnx_off_exports_nothing(tmp_path):
    cfg = make_cfg(tmp_path / "run", "export.onnx=false")
    outcome = run_export(cfg)
    assert outcome.manifest["counts"] == {"exported": False}
    assert not (Path(cfg.run.dir) / "stages" / "export" / "onnx").exists()


def test_optimized_export_reproduces_torch(tmp_path):
    from sentence_transformers import SentenceTransformer

    base = resolve_model(BASE, offline=True)
    files = export.export_onnx(base, tmp_path / "onnx", optimize="O2")
    assert files == {"fp32": FP32_FILE, "optimized": "onnx/model_O2.onnx"}
    assert not (tmp_path / "onnx.tmp").exists()  # written whole, then moved into place
    got = load_onnx(tmp_path / "onnx", files["optimized"]).encode(SENTENCES)
    assert cosines(got, SentenceTransformer(base, device="cpu").encode(SENTENCES)).min() >= 0.999


def test_int8_file_names_follow_sentence_transformers():
    assert int8_file_name("avx2") == "onnx/model_quint8_avx2.onnx"
    assert int8_file_name("avx512_vnni") == "onnx/model_qint8_avx512_vnni.onnx"
    assert pick_int8_config("avx2") == "avx2"
    assert pick_int8_config() in {"avx512_vnni", "avx2", "arm64"}
    with pytest.raises(StageError, match="unknown int8 config"):
        pick_int8_config("avx9")


def test_retrieval_task_subsampling_keeps_judged_documents(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for i in range(50):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i}"}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        for i in range(10):
            fh.write(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i * 4}\t1\n" for i in range(10)) + "q9\tmissing\t1\n")
    task = load_retrieval_task(folder, max_queries=4, max_corpus=10, seed=1)
    assert len(task.queries) == 4 and len(task.corpus) == 10
    for rels in task.qrels.values():
        assert set(rels) <= set(task.corpus) and rels
    assert task == load_retrieval_task(folder, max_queries=4, max_corpus=10, seed=1)  # seeded
    with pytest.raises(InputError, match=r"not a BEIR folder.*qrels/dev\.tsv"):
        load_retrieval_task(folder, "dev")


@pytest.mark.slow
def test_default_parity_on_1000_passages_and_int8_ndcg(tmp_path):
    """The stage's defaults: 1,000 passages, int8 nDCG@10 on the scientific domain's set (SciFact)."""
    if not (data_dir() / "scifact" / "qrels" / "test.tsv").is_file():
        pytest.skip("needs the shared SciFact set")
    counts = run_export(make_cfg(tmp_path / "run")).manifest["counts"]
    assert counts["parity_passages"] == 1000
    assert counts["fp32_min_cosine"] >= 0.999
    assert counts["int8_ndcg_drop_points"] <= 0.5
    if "bf16_ndcg_drop_points" in counts:  # where the CPU has avx512_bf16 / AMX
        assert counts["bf16_ndcg_drop_points"] <= 0.5
