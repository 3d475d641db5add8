"""The mine stage: the false-negative guard, the split, fusion, and the stage end to end on a tiny corpus.

The stage runs on a real ingest output (a small medical jsonl corpus) and a stand-in ``generate``
stage that writes a queries Dataset through ``run_stage``, so manifests and fingerprints are real.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from itertools import pairwise

import datasets
import pytest

from trainer import ingest, mine
from trainer.config import load_config
from trainer.mine import fuse, margin_threshold, select_negatives, split_documents
from trainer.rundir import Input, RunDir, Stage, fingerprint_dir, run_stage

TOPICS = {
    "insulin": ["Insulin lowers blood glucose after meals.", "It is made by beta cells in the pancreas.",
                "Type 1 diabetes destroys those beta cells.", "Patients then inject insulin several times a day.",
                "Long-acting insulin covers the basal need overnight.", "Hypoglycaemia is the main risk of dosing."],
    "statins": ["Statins lower LDL cholesterol in the blood.", "They block HMG-CoA reductase in the liver.",
                "Lower cholesterol reduces heart attacks and strokes.", "Muscle pain is a known side effect.",
                "Atorvastatin is the most prescribed statin.", "Grapefruit juice raises statin levels."],
    "betablockers": ["Beta blockers slow the heart rate.", "They block adrenaline at beta receptors.",
                     "Doctors prescribe them after a heart attack.", "They also treat high blood pressure.",
                     "Asthma patients should avoid non-selective ones.", "Stopping them suddenly can be dangerous."],
    "antibiotics": ["Antibiotics kill bacteria or stop their growth.", "Penicillin was discovered by Fleming.",
                    "They do not work against viruses such as influenza.", "Overuse breeds resistant bacteria.",
                    "MRSA resists many common antibiotics.", "A full course should be finished."],
    "vaccines": ["Vaccines train the immune system against infection.", "They contain weakened or inactive antigens.",
                 "Measles vaccination prevents outbreaks in schools.", "Herd immunity protects the unvaccinated.",
                 "mRNA vaccines instruct cells to make a spike protein.", "Boosters restore waning antibody levels."],
    "asthma": ["Asthma narrows the airways and causes wheezing.", "Inhaled steroids reduce airway inflammation.",
               "Salbutamol inhalers relieve attacks quickly.", "Pollen and cold air can trigger symptoms.",
               "Peak flow meters track lung function at home.", "Severe attacks need emergency oxygen."],
    "migraine": ["Migraine causes throbbing one-sided headaches.", "An aura of flashing lights may come first.",
                 "Triptans narrow dilated blood vessels in the brain.", "Bright light and noise worsen the pain.",
                 "Lack of sleep is a common trigger.", "Preventive drugs reduce attack frequency."],
    "dialysis": ["Dialysis filters the blood when kidneys fail.", "Haemodialysis runs three times a week.",
                 "Peritoneal dialysis uses the abdominal lining.", "Patients must limit fluid and potassium.",
                 "A fistula in the arm gives access to the blood.", "A kidney transplant can end dialysis."],
    "malaria": ["Malaria is spread by Anopheles mosquitoes.", "The parasite Plasmodium infects red blood cells.",
                "Fever returns in cycles every few days.", "Bed nets treated with insecticide prevent bites.",
                "Artemisinin combinations are the standard treatment.", "Travellers take prophylactic tablets."],
    "depression": ["Depression lowers mood for weeks or months.", "SSRIs raise serotonin levels in synapses.",
                   "Talking therapy works as well for mild cases.", "Sleep and appetite often change.",
                   "Antidepressants take weeks to show an effect.", "Exercise helps with mild symptoms."],
    "osteoporosis": ["Osteoporosis makes bones thin and fragile.", "Hip fractures are its worst consequence.",
                     "Bisphosphonates slow the loss of bone.", "Calcium and vitamin D support bone strength.",
                     "A DEXA scan measures bone density.", "Women after menopause are most at risk."],
    "thyroid": ["The thyroid gland makes hormones that set metabolism.",
                "Hypothyroidism causes tiredness and weight gain.",
                "Levothyroxine replaces the missing hormone.", "An overactive thyroid speeds the heart.",
                "Iodine deficiency can cause a goitre.", "Blood tests measure TSH levels."],
}


def write_corpus(folder, topics):
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "docs.jsonl").open("w") as fh:
        for name, sentences in topics.items():
            fh.write(json.dumps({"id": name, "title": name.capitalize(), "text": " ".join(sentences)}) + "\n")


def generate_stage(rows):
    """A stand-in for the generate stage: writes ``queries`` with the contract's columns."""

    def run(ctx):
        datasets.Dataset.from_list(rows).save_to_disk(str(ctx.dir / "queries"))
        return {"queries": len(rows)}

    return Stage(name="generate", run=run, sections=("generate",), reads=(Input("ingest", "chunks"),),
                 writes=("queries",), version="test")


def query_rows(chunks):
    """One factual query per chunk (its first sentence, reworded), and 2-hop queries: within a
    document (chunks 0 and 1) and across neighbouring documents (some of which span the split)."""
    by_doc: dict[str, list[dict]] = {}
    for c in chunks:
        by_doc.setdefault(c["doc_id"], []).append(c)
    rows = []
    for c in chunks:
        first = c["text"].split(". ")[0].rstrip(".")
        rows.append({"query_id": f"q-{c['chunk_id']}", "query": f"Is it true that {first.lower()}?",
                     "type": "factual", "hops": 1, "positive_chunk_ids": [c["chunk_id"]],
                     "positive_doc_ids": [c["doc_id"]], "judge_score": 8.0})
    docs = sorted(by_doc)
    for d in docs:
        a, b = by_doc[d][:2]
        rows.append({"query_id": f"mh-{d}", "query": f"{a['text'].split('.')[0]} and {b['text'].split('.')[0]}?",
                     "type": "multi_hop", "hops": 2, "positive_chunk_ids": [a["chunk_id"], b["chunk_id"]],
                     "positive_doc_ids": [d], "judge_score": 8.0})
    for d1, d2 in pairwise(docs):
        a, b = by_doc[d1][0], by_doc[d2][0]
        rows.append({"query_id": f"x-{d1}-{d2}", "query": f"{a['text'].split('.')[0]} or {b['text'].split('.')[0]}?",
                     "type": "multi_hop", "hops": 2, "positive_chunk_ids": [a["chunk_id"], b["chunk_id"]],
                     "positive_doc_ids": [d1, d2], "judge_score": 8.0})
    return rows


def make_run(root, topics, *overrides):
    src = root / "src"
    write_corpus(src, topics)
    cfg = config(root / "run", f"ingest.source={src}", *overrides)
    rd = RunDir(cfg.run.dir)
    run_stage(ingest.STAGE, cfg, rd)
    chunks = datasets.load_from_disk(str(rd.stage_dir("ingest") / "chunks")).to_list()
    run_stage(generate_stage(query_rows(chunks)), cfg, rd)
    return rd


def config(run_dir, *overrides):
    return load_config(None, [f"run.dir={run_dir}", "ingest.chunk_sentences=2", "mine.num_negatives=3", *overrides])


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """ingest + generate over the 12-topic corpus, done once; tests copy it."""
    root = tmp_path_factory.mktemp("mine-base")
    make_run(root, TOPICS)
    return root


@pytest.fixture
def run_copy(base_run, tmp_path):
    shutil.copytree(base_run, tmp_path, dirs_exist_ok=True)
    return tmp_path


def mine_in(root, *overrides):
    cfg = config(root / "run", f"ingest.source={root / 'src'}", *overrides)
    rd = RunDir(cfg.run.dir)
    return run_stage(mine.STAGE, cfg, rd), rd.stage_dir("mine")


def load(sdir, name):
    return datasets.load_from_disk(str(sdir / name))


# ---------------------------------------------------------------- the guard, deterministically


def test_perc_margin_drops_096_keeps_094_of_the_positive_score():
    pos = 0.8
    cands = [(1, 0.96 * pos), (2, 0.94 * pos), (3, 0.5)]
    kept, drops = select_negatives(cands, pos, k=5, margin=0.95, margin_type="perc")
    assert kept == [2, 3] and drops == Counter(margin=1)
    assert margin_threshold(pos, 0.95, "perc") == pytest.approx(0.76)
    # with several positives the lowest one sets the threshold (the caller passes the minimum)
    kept, _ = select_negatives([(1, 0.7)], min(0.9, 0.72), k=5, margin=0.95, margin_type="perc")
    assert kept == []  # 0.7 > 0.95 x 0.72 = 0.684


def test_abs_margin_and_negative_positive_scores():
    assert margin_threshold(0.8, 0.05, "abs") == pytest.approx(0.75)
    kept, drops = select_negatives([(1, 0.76), (2, 0.74)], 0.8, k=5, margin=0.05, margin_type="abs")
    assert kept == [2] and drops == Counter(margin=1)
    # a negative positive score lowers the threshold (as sentence-transformers' relative_margin does)
    assert margin_threshold(-0.2, 0.95, "perc") == pytest.approx(-0.21)
    kept, _ = select_negatives([(1, -0.205), (2, -0.3)], -0.2, k=5, margin=0.95, margin_type="perc")
    assert kept == [2]


def test_guard_rejects_before_the_margin_and_keeps_first_k_in_order():
    cands = [(i, 0.1 * (10 - i) / 10) for i in range(10)]
    reasons = {0: "positive", 1: "same_document", 4: "near_duplicate"}
    keys = {i: f"text{i}" for i in range(10)} | {3: "text2"}  # 3 duplicates 2's text
    kept, drops = select_negatives(cands, 0.9, k=3, margin=0.95, margin_type="perc",
                                   reject=reasons.get, key=keys.__getitem__)
    assert kept == [2, 5, 6]
    assert drops == Counter(positive=1, same_document=1, near_duplicate=1, duplicate_negative=1)


def test_fusion_rrf_and_union():
    dense, lexical = [1, 2, 3, 4], [9, 3, 1, 8]
    rrf = fuse(dense, lexical, "rrf")
    assert rrf[:2] == [1, 3]  # found by both rank above the rest
    assert set(rrf) == {1, 2, 3, 4, 8, 9}
    assert fuse(dense, lexical, "union") == [1, 9, 2, 3, 4, 8]
    assert fuse([], [5, 6], "rrf") == [5, 6]


def test_split_is_seeded_and_keeps_both_sides():
    ids = [f"d{i}" for i in range(100)]
    test = split_documents(ids, 0.2, 42)
    assert len(test) == 20 and test == split_documents(list(reversed(ids)), 0.2, 42)
    assert test != split_documents(ids, 0.2, 7)
    assert len(split_documents(["a", "b"], 0.2, 1)) == 1  # each side gets one
    assert split_documents(["a"], 0.2, 1) == set()  # a single document is trained on
    assert split_documents(ids, 0.0, 1) == set()


# ---------------------------------------------------------------- the stage end to end


def test_hybrid_stage_writes_rows_without_test_leakage(run_copy):
    outcome, sdir = mine_in(run_copy)
    assert outcome.action == "ran"
    counts = outcome.manifest["counts"]
    k = 3

    train, meta = load(sdir, "train"), load(sdir, "train_meta")
    assert train.column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    assert len(train) == len(meta) == counts["train_rows"] > 0
    split = {r["doc_id"]: r["split"] for r in load(sdir, "split")}
    test_docs = {d for d, s in split.items() if s == "test"}
    assert counts["documents_test"] == len(test_docs) == 2  # 20% of 12, rounded

    # no test document is trained on: not as positive, not as negative; no test query is an anchor
    chunk_doc = {c["chunk_id"]: c["doc_id"] for c in load(run_copy / "run/stages/ingest", "chunks")}
    for m in meta:
        assert chunk_doc[m["positive_id"]] not in test_docs
        assert not {chunk_doc[n] for n in m["negative_ids"]} & test_docs
        assert len(m["negative_ids"]) == k and len(set(m["negative_ids"])) == k
        assert m["positive_id"] not in m["negative_ids"]
        # the default guard: no negative from a positive's document, none above 0.95 x the positive
        assert chunk_doc[m["positive_id"]] not in {chunk_doc[n] for n in m["negative_ids"]}
        assert max(m["negative_scores"]) <= 0.95 * m["positive_score"] + 1e-6

    beir = sdir / "test_beir"
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus) == len(chunk_doc) and set(corpus[0]) == {"_id", "title", "text"}
    test_queries = [json.loads(line) for line in (beir / "queries.jsonl").read_text().splitlines()]
    qrels = (beir / "qrels" / "test.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore"
    assert len(test_queries) == counts["queries_test"] > 0 and len(qrels) - 1 == counts["test_qrels"]
    assert all(chunk_doc[line.split("\t")[1]] in test_docs for line in qrels[1:])
    assert not {q["_id"] for q in test_queries} & set(meta["query_id"])
    assert not {q["text"] for q in test_queries} & set(train["anchor"])

    # queries across the split are dropped and counted; every input query is accounted for
    assert counts["queries_dropped"]["cross_split"] >= 1
    assert counts["queries_train"] + counts["queries_test"] + sum(counts["queries_dropped"].values()) \
        == counts["queries_in"]

    # multi-hop unrolling: a 2-positive query gives 2 rows with the same negatives
    rows_per_query = Counter(meta["query_id"])
    two_hop = [q for q in rows_per_query if q.startswith("mh-")]
    assert two_hop and all(rows_per_query[q] == 2 for q in two_hop)
    by_q = [i for i, m in enumerate(meta) if m["query_id"] == two_hop[0]]
    r0, r1 = train[by_q[0]], train[by_q[1]]
    assert r0["anchor"] == r1["anchor"] and r0["positive"] != r1["positive"]
    assert [r0[f"negative_{j}"] for j in (1, 2, 3)] == [r1[f"negative_{j}"] for j in (1, 2, 3)]
    assert all(n == (2 if q.startswith(("mh-", "x-")) else 1) for q, n in rows_per_query.items())

    # passages are title + " " + text
    first = meta[0]["positive_id"]
    chunk = next(c for c in load(run_copy / "run/stages/ingest", "chunks") if c["chunk_id"] == first)
    assert train[0]["positive"] == f"{chunk['title']} {chunk['text']}"

    stats = json.loads((sdir / "stats.json").read_text())
    assert stats["rows"]["train"] == len(train)
    assert sum(stats["negatives_found_per_query"].values()) == counts["queries_train"]
    assert stats["scores"]["positive"]["median"] > stats["scores"]["negative"]["median"]
    assert stats["candidates_dropped"]["positive"] >= counts["queries_train"]
    assert sum(stats["negative_sources"].values()) == k * (counts["queries_train"] - counts["queries_short"])
    assert (sdir / "scores_hist.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (sdir / "_work").exists()


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_single_retriever_modes(run_copy, mode):
    outcome, sdir = mine_in(run_copy, f"mine.mode={mode}")
    counts = outcome.manifest["counts"]
    stats = json.loads((sdir / "stats.json").read_text())
    assert counts["train_rows"] > 0 and stats["mode"] == mode
    other = {"dense": "bm25", "bm25": "dense"}[mode]
    assert stats["negative_sources"][other] == stats["negative_sources"]["both"] == 0
    meta = load(sdir, "train_meta")
    assert all(max(m["negative_scores"]) <= 0.95 * m["positive_score"] + 1e-6 for m in meta)


def test_rerun_is_a_noop_and_a_changed_setting_reruns(run_copy):
    first, sdir = mine_in(run_copy)
    stamp = (sdir / "train").stat().st_mtime_ns
    again, _ = mine_in(run_copy)
    assert again.action == "skipped" and again.manifest == first.manifest
    assert (sdir / "train").stat().st_mtime_ns == stamp
    changed, _ = mine_in(run_copy, "mine.margin=0.5")
    assert changed.action == "ran"
    assert len(list((run_copy / "run" / "archive").glob("mine-*"))) == 1
    # the stricter guard is applied in the stage: more candidates dropped, all kept ones under it
    assert changed.manifest["counts"]["candidates_dropped"]["margin"] > \
        first.manifest["counts"]["candidates_dropped"].get("margin", 0)
    meta = load(sdir, "train_meta")
    assert len(meta) and all(max(m["negative_scores"]) <= 0.5 * m["positive_score"] + 1e-6 for m in meta)


class Killed(BaseException):
    """A simulated kill: like SIGKILL, no `except Exception` handler sees it (the manifest stays 'running')."""


def test_killed_run_resumes_from_cached_embeddings(run_copy, tmp_path_factory, monkeypatch, base_run):
    monkeypatch.setattr(mine, "EMBED_BLOCK", 16)
    clean_root = tmp_path_factory.mktemp("clean")
    shutil.copytree(base_run, clean_root, dirs_exist_ok=True)
    _, clean = mine_in(clean_root, "run.embedding_cache=false")

    def crash(name):
        if name == "mine.embed.passages.2":
            raise Killed(name)

    monkeypatch.setattr(mine, "crash_point", crash)
    with pytest.raises(Killed):
        mine_in(run_copy, "run.embedding_cache=false")  # passage blocks in the stage's _work folder
    sdir = run_copy / "run/stages/mine"
    assert json.loads((sdir / "manifest.json").read_text())["status"] == "running"
    assert len(list((sdir / "_work" / "passages").glob("*.npy"))) == 2

    monkeypatch.setattr(mine, "crash_point", lambda name: None)
    outcome, _ = mine_in(run_copy, "run.embedding_cache=false")
    assert outcome.action == "resumed" and outcome.manifest["counts"]["embedding_blocks_reused"] == 2
    assert outcome.manifest["output_fingerprint"] == fingerprint_dir(clean)
    assert load(sdir, "train").to_list() == load(clean, "train").to_list()


def test_passage_embeddings_are_shared_across_runs_and_resume_a_killed_run(run_copy, tmp_path_factory, monkeypatch,
                                                                            base_run):
    """run.embedding_cache: a second run (another margin, another run folder) embeds no passage again, a killed run
    resumes from the shared blocks, and the outputs equal those of a run that embedded everything itself."""
    monkeypatch.setattr(mine, "EMBED_BLOCK", 16)
    cache = tmp_path_factory.mktemp("user-cache")
    monkeypatch.setenv("DOMAIN_EMBED_CACHE", str(cache))
    alone_root = tmp_path_factory.mktemp("alone")
    shutil.copytree(base_run, alone_root, dirs_exist_ok=True)
    _, alone = mine_in(alone_root, "run.embedding_cache=false", "mine.margin=0.9")
    assert not (cache / "embeddings").exists()

    def crash(name):
        if name == "mine.embed.passages.1":
            raise Killed(name)

    monkeypatch.setattr(mine, "crash_point", crash)
    with pytest.raises(Killed):
        mine_in(run_copy)
    assert len(list((cache / "embeddings").glob("*.npy"))) == 1
    assert not (run_copy / "run/stages/mine/_work/passages").exists()
    monkeypatch.setattr(mine, "crash_point", lambda name: None)
    first, _ = mine_in(run_copy)
    n_blocks = len(list((cache / "embeddings").glob("*.npy")))
    assert first.action == "resumed" and first.manifest["counts"]["embedding_blocks_reused"] == 1 and n_blocks > 1

    other_root = tmp_path_factory.mktemp("other")
    shutil.copytree(base_run, other_root, dirs_exist_ok=True)
    again, sdir = mine_in(other_root, "mine.margin=0.9")
    # every passage block came from the cache (query blocks live in the new run's _work: none to reuse)
    assert again.manifest["counts"]["embedding_blocks_reused"] == n_blocks
    assert len(list((cache / "embeddings").glob("*.npy"))) == n_blocks
    assert fingerprint_dir(sdir) == fingerprint_dir(alone)  # the same rows as a run that embedded everything


def test_one_document_corpus_finishes_and_counts_what_it_could_not_fill(tmp_path):
    make_run(tmp_path, {"insulin": TOPICS["insulin"]})
    outcome, sdir = mine_in(tmp_path)
    counts = outcome.manifest["counts"]
    assert counts["documents_train"] == 1 and counts["documents_test"] == 0
    assert counts["train_rows"] == 0 and counts["queries_short"] == counts["queries_train"] > 0
    assert counts["rows_dropped_short"] >= counts["queries_short"]
    assert load(sdir, "train").column_names == ["anchor", "positive", "negative_1", "negative_2", "negative_3"]
    stats = json.loads((sdir / "stats.json").read_text())
    assert stats["negatives_found_per_query"]["0"] == counts["queries_train"]  # all same-document
    assert (sdir / "test_beir" / "qrels" / "test.tsv").read_text() == "query-id\tcorpus-id\tscore\n"


def test_fewer_documents_than_negatives(tmp_path):
    few = {name: TOPICS[name] for name in ("insulin", "statins", "malaria")}
    make_run(tmp_path, few, "mine.test_fraction=0")
    outcome, sdir = mine_in(tmp_path, "mine.test_fraction=0", "mine.num_negatives=8")
    counts = outcome.manifest["counts"]
    # 9 chunks: a query may use the 6 chunks of the other two documents, never 8
    assert counts["train_rows"] == 0 and counts["queries_short"] == counts["queries_train"] == counts["queries_in"]
    stats = json.loads((sdir / "stats.json").read_text())
    assert max(int(n) for n, c in stats["negatives_found_per_query"].items() if c) <= 6
