"""Subcategory task lists from mteb's metadata, leaderboard references and the domain ranking,
computed from the shared MTEB results snapshot."""

import json

import pytest

from trainer.domain_ranking import domains_table, main, to_markdown, write_domains
from trainer.domains import domain_tasks
from trainer.errors import ConfigError, InputError
from trainer.leaderboard import references

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIR = "sentence-transformers__all-MiniLM-L6-v2/8b3219a92973c328a8e22fadcfa821b5dc75636a"


def test_domain_tasks_come_from_mteb_benchmarks():
    assert domain_tasks("legal") == [
        "AILACasedocs", "AILAStatutes", "LegalSummarization", "LegalBenchConsumerContractsQA",
        "LegalBenchCorporateLobbying",
    ]  # MTEB(Law, v1) retrieval tasks in English (GerDaLIR, LeCaRDv2, LegalQuAD are not)
    medical = domain_tasks("medical")
    assert {"SciFact", "NFCorpus", "TRECCOVID", "MedicalQARetrieval"} <= set(medical)
    assert "CmedqaRetrieval" not in medical and "TRECCOVID-PL" not in medical
    assert {"CosQA", "StackOverflowQA"} <= set(domain_tasks("code"))
    assert {"SciFact", "SCIDOCS"} <= set(domain_tasks("scientific"))
    assert "MSMARCO" not in domain_tasks("scientific")
    with pytest.raises(ConfigError):
        domain_tasks("astrology")


@pytest.mark.shared_data
def test_references_from_snapshot(shared_data):
    refs = references(["SciFact", "AILAStatutes"], base_model=MINILM, results_dir=shared_data / "mteb-results")
    sci = refs["SciFact"]
    expected = json.loads((shared_data / "mteb-results/results" / MINILM_DIR / "SciFact.json").read_text())
    assert sci["base_leaderboard"] == pytest.approx(expected["scores"]["test"][0]["main_score"])
    assert sci["base_leaderboard"] == pytest.approx(0.645, abs=0.005)
    assert sci["n_models"] > 100
    assert sci["best"]["score"] >= sci["best_under_500m"]["score"] >= sci["best_under_100m"]["score"]
    assert sci["best_under_100m"]["n_parameters"] < 100_000_000
    assert sci["best_under_500m"]["n_parameters"] < 500_000_000
    assert refs["AILAStatutes"]["base_leaderboard"] == pytest.approx(0.20516)


def test_missing_results_folder_is_actionable(tmp_path):
    with pytest.raises(InputError, match="results_dir"):
        references(["SciFact"], results_dir=tmp_path)


@pytest.mark.shared_data
def test_domain_ranking_on_snapshot(shared_data, tmp_path):
    rows = domains_table(shared_data / "mteb-results")
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert {r["domain"] for r in rows} == {"medical", "legal", "scientific", "code"}
    rooms = [r["room"] for r in rows]
    assert rooms == sorted(rooms, reverse=True) and all(0 < x < 1 for x in rooms)
    legal = next(r for r in rows if r["domain"] == "legal")
    assert legal["n_tasks"] == 5 and legal["n_tasks_with_results"] == 5
    # the base column is MiniLM's own mean over the legal tasks, read straight from the JSON files
    own = [json.loads((shared_data / "mteb-results/results" / MINILM_DIR / f"{t}.json").read_text())
           ["scores"]["test"][0]["main_score"] for t in legal["tasks_with_results"]]
    assert legal["base"] == pytest.approx(sum(own) / len(own))
    for r in rows:
        assert r["best"] >= r["best_under_500m"] >= r["best_under_100m"]
        assert r["room"] == pytest.approx(r["best"] - r["best_under_100m"])
        assert r["median_corpus_docs"] and r["median_corpus_docs"] > 0
    aila = next(t for t in legal["per_task"] if t["task"] == "AILAStatutes")
    assert aila["corpus_docs"] == 82  # mteb's descriptive statistics
    table = to_markdown(rows)
    assert table.count("\n") == 2 + 4 and "| 1 | " in table

    paths = write_domains(tmp_path, shared_data / "mteb-results")
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert json.loads(paths["json"].read_text())[0]["domain"] == rows[0]["domain"]


@pytest.mark.shared_data
def test_domains_main_prints_table(shared_data, capsys, tmp_path):
    assert main(["--results-dir", str(shared_data / "mteb-results")]) == 0
    assert "| rank | domain |" in capsys.readouterr().out
    assert main(["--results-dir", str(tmp_path)]) == 2
    assert "no MTEB results folder" in capsys.readouterr().err


def test_no_tasks_means_no_references():
    from trainer.leaderboard import load_scores

    assert load_scores([]) == {}
