"""Presets and the time estimate (rates from BENCHMARKS.md)."""

from __future__ import annotations

import pytest

from trainer.config import load_config
from trainer.files import write_json_atomic
from trainer.presets import PRESETS, RATES, estimate, presets_for


def _cfg(name: str, *extra: str, source="builtin:python-docs", domain="code"):
    return load_config(None, [f"ingest.source={source}", f"domain={domain}", *PRESETS[name].overrides, *extra])


def test_presets_fit_the_hardware_and_load_as_settings():
    assert [p.name for p in presets_for("cpu")] == ["cpu-quick"]
    assert [p.name for p in presets_for("t4")] == ["t4", "cpu-quick"]
    assert [p.name for p in presets_for("a100")] == ["a100", "cpu-quick"]
    for p in PRESETS.values():
        cfg = _cfg(p.name)
        assert cfg.train.profile == p.profile and p.label and p.summary
    assert _cfg("t4").train.precision == "fp16" and _cfg("a100").train.precision == "bf16"


@pytest.mark.parametrize(("source", "domain"), [("builtin:python-docs", "code"), ("data:scifact", "scientific"),
                                                ("data:legalbench_corporate_lobbying", "legal")])
def test_cpu_quick_is_estimated_at_about_15_minutes(source, domain, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    est = estimate(_cfg("cpu-quick", f"run.dir={tmp_path}", source=source, domain=domain))
    assert list(est.seconds) == ["ingest", "generate", "mine", "train", "evaluate", "export", "publish"]
    assert 10 * 60 <= est.total_s <= 20 * 60, est.format()
    assert est.seconds["generate"] <= 10 * 60 + 10  # generate.max_minutes caps the largest stage
    assert "4.74 rows/s" in est.basis and "Quickstart" in est.basis and "(BENCHMARKS.md)" in est.basis


def test_the_recipes_take_longer_and_more_data_takes_longer(tmp_path):
    quick = estimate(_cfg("cpu-quick", f"run.dir={tmp_path}"), n_chunks=968, n_documents=78)
    t4 = estimate(_cfg("t4", f"run.dir={tmp_path}"), n_chunks=968, n_documents=78)
    assert t4.total_s > quick.total_s and "assumed 15x" in t4.basis  # GPU speed is an assumption, said so
    small = estimate(_cfg("t4", f"run.dir={tmp_path}"), n_chunks=200, n_documents=100)
    big = estimate(_cfg("t4", f"run.dir={tmp_path}"), n_chunks=10000, n_documents=5000)
    assert big.seconds["generate"] > small.seconds["generate"] and big.seconds["mine"] > small.seconds["mine"]


def test_the_estimate_reads_the_corpus_size_from_the_runs_ingest_output(tmp_path):
    cfg = _cfg("cpu-quick", f"run.dir={tmp_path}", source=str(tmp_path / "my-corpus"))
    guessed = estimate(cfg)
    assert "corpus size unknown" in guessed.basis
    (tmp_path / "stages" / "ingest").mkdir(parents=True)
    write_json_atomic(tmp_path / "stages" / "ingest" / "manifest.json",
                      {"stage": "ingest", "status": "complete", "counts": {"documents": 40, "chunks": 90}})
    known = estimate(cfg)
    assert "the run's ingest output (90 chunks)" in known.basis
    assert known.seconds["mine"] < guessed.seconds["mine"]


def test_every_rate_names_where_it_comes_from():
    for name, (value, source) in RATES.items():
        assert value > 0 and source, name


def test_cli_estimate_and_run_with_a_preset(cli, tmp_path):
    res = cli("estimate", "--preset", "cpu-quick", "--source", "data:scifact", "--set", "domain=scientific",
              "--run-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("ingest") and "total" in res.stdout and "basis:" in res.stdout
    res = cli("run", "--preset", "nope", "--source", "data:scifact", "--run-dir", str(tmp_path))
    assert res.returncode == 2 and "unknown preset 'nope'; available: cpu-quick, t4, a100" in res.stderr
    res = cli("config", "--preset", "cpu-quick", "--set", "generate.questions_per_chunk=2")
    assert "questions_per_chunk: 2" in res.stdout and "sample_documents: 100" in res.stdout  # --set wins
