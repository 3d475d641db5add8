"""Synthetic query generation: parsing and filters, planning, and the stage against a real llama.cpp
server (SmolLM2-135M, embedded or behind a fault-injecting proxy), including resume after a kill."""

import json

import datasets
import numpy as np
import pytest

from trainer.config import load_config
from trainer.generate import (
    copy_reason,
    generator_identity,
    near_duplicates,
    parse_judge,
    parse_query,
    plan_tasks,
    word_overlap,
)
from trainer.prompts import PROMPT_VERSION

from .fault_proxy import FaultProxy

FIXTURE_GEN = "generate.generator=smollm2-135m-instruct-q4_1"


# --- parsing and filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "query", "reason"),
    [
        ('{"query": "How does metformin lower glucose?"}', "How does metformin lower glucose?", None),
        ('```json\n{"query": "why use asyncio"}\n```', "why use asyncio", None),
        ("Query: How are statins dosed?\nExplanation: ...", "How are statins dosed?", None),
        ('{"question": "What does sorted() return?"}', "What does sorted() return?", None),
        ('{"query": 3}', None, "invalid_json"),
        ("{not json", None, "invalid_json"),
        ('{"query": "Hi"}', None, "too_short"),
        ('{"query": "What does the passage say about insulin?"}', None, "refers_to_passage"),
        ("According to this text, what lowers glucose?", None, "refers_to_passage"),
        ("I'm sorry, I cannot help with that request.", None, "refers_to_passage"),
        ('{"query": "' + "word " * 80 + '"}', None, "too_long"),
        ('{"query": "12 34 56 78 90 !!"}', None, "not_text"),
    ],
)
def test_parse_query(raw, query, reason):
    assert parse_query(raw) == (query, reason)


def test_copy_filter():
    passage = "Statins inhibit HMG-CoA reductase, lowering LDL cholesterol synthesis in the liver."
    title = "Statin pharmacology and LDL lowering"
    assert copy_reason("Statins inhibit HMG-CoA reductase, lowering LDL cholesterol", [passage], [title], 0.6) \
        == "copies_passage"
    assert copy_reason("statin pharmacology and LDL lowering", [passage], [title], 0.6) == "copies_title"
    assert copy_reason("How do statins reduce cholesterol made by the liver?", [passage], [title], 0.6) is None
    # a 5-word run inside a long query is fine; only runs >= 60% of the query count
    long_q = "In older adults with diabetes, do statins inhibit HMG-CoA reductase enough to matter clinically?"
    assert copy_reason(long_q, [passage], [title], 0.6) is None


def test_word_overlap_counts_content_words_found_in_the_passages():
    passages = ["Statins inhibit HMG-CoA reductase in the liver.", "LDL falls."]
    assert word_overlap("Statins lower LDL", passages) == pytest.approx(2 / 3)
    assert word_overlap("statins inhibit the reductase", passages) == 1.0  # case and stopwords aside
    assert word_overlap("Cholesterol drugs protect arteries", passages) == 0.0
    assert word_overlap("the and of", passages) == 1.0  # nothing to paraphrase: counts as a copy


def test_parse_judge():
    good = '{"relevance": 8, "accuracy": 9, "support": 7, "clarity": 8, "overall": 8}'
    assert parse_judge(good)["overall"] == 8.0
    assert parse_judge("Scores: " + good + " done")["support"] == 7.0
    assert parse_judge('{"relevance": 8}') is None
    assert parse_judge('{"relevance": 11, "accuracy": 9, "support": 7, "clarity": 8, "overall": 8}') is None
    assert parse_judge("great query!") is None


def test_near_duplicates():
    e = np.array([[1, 0], [0.99, 0.141], [0, 1], [0.6, 0.8]], dtype=np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    assert near_duplicates(e, 0.9) == [False, True, False, False]


def _chunks(n_docs, per_doc):
    return [{"chunk_id": f"d{d}#{i}", "doc_id": f"d{d}", "chunk_index": i, "title": f"T{d}",
             "text": f"document {d} chunk {i} about topic {d * 7 + i} and more words"}
            for d in range(n_docs) for i in range(per_doc)]


def test_plan_cycles_types_and_hops():
    cfg = load_config(None, ["generate.questions_per_chunk=3"])
    tasks = plan_tasks(_chunks(3, 3), cfg)
    assert len(tasks) == 27
    assert [t.qtype for t in tasks[:3]] == ["factual", "contextual", "multi_hop"]
    for t in tasks:
        if t.qtype == "multi_hop":
            assert 2 <= len(t.chunk_ids) <= 3
            assert t.chunk_ids[0].split("#")[0] == t.chunk_ids[1].split("#")[0]  # neighbours first
        else:
            assert len(t.chunk_ids) == 1
    assert plan_tasks(_chunks(3, 3), cfg) == tasks  # deterministic


def test_plan_single_chunk_docs_use_other_documents_and_sampling():
    cfg = load_config(None, ["generate.min_hops=2", "generate.max_hops=2", "generate.questions_per_chunk=1",
                             "generate.sample_documents=4"])
    tasks = plan_tasks(_chunks(10, 1), cfg)
    assert len(tasks) == 4 and all(t.qtype == "multi_hop" and len(t.chunk_ids) == 2 for t in tasks)
    assert all(t.chunk_ids[0].split("#")[0] != t.chunk_ids[1].split("#")[0] for t in tasks)
    one_hop = load_config(None, ["generate.max_hops=1", "generate.max_chunks_per_document=1"])
    tasks = plan_tasks(_chunks(2, 5), one_hop)
    assert {t.qtype for t in tasks} == {"factual", "contextual"} and len(tasks) == 6


def test_plan_query_types_restrict_and_order_the_cycle():
    claims = load_config(None, ["generate.query_types=[factual]", "generate.questions_per_chunk=2"])
    tasks = plan_tasks(_chunks(3, 2), claims)
    assert len(tasks) == 12 and {t.qtype for t in tasks} == {"factual"}
    assert all(len(t.chunk_ids) == 1 for t in tasks)
    two = load_config(None, ["generate.query_types=[multi_hop, factual]", "generate.questions_per_chunk=1"])
    assert [t.qtype for t in plan_tasks(_chunks(4, 1), two)] == ["multi_hop", "factual"] * 2


def test_keyword_queries_have_their_own_examples_and_leave_other_prompts_alone():
    from trainer.domains import DOMAINS, SUBCATEGORIES
    from trainer.prompts import query_messages

    mix = load_config(None, ["generate.query_types=[factual, keyword]", "generate.questions_per_chunk=1",
                             "generate.max_chunks_per_document=1"])
    assert [t.qtype for t in plan_tasks(_chunks(4, 1), mix)] == ["factual", "keyword"] * 2  # one doc each
    for name in (*SUBCATEGORIES, "general"):
        spec = DOMAINS[name]
        assert len(spec.keywords) == len(spec.examples)
        kw = query_messages(name, "keyword", ["Some text."])
        shots = [json.loads(m["content"])["query"] for m in kw if m["role"] == "assistant"]
        assert shots == list(spec.keywords) and all(3 <= len(k.split()) <= 6 for k in shots)
        assert "3 to 6 words" in kw[-1]["content"] and "3 to 6 words" in kw[1]["content"]
        fact = query_messages(name, "factual", ["Some text."])  # unchanged: its cached answers still hold
        assert [json.loads(m["content"])["query"] for m in fact if m["role"] == "assistant"] == \
            [q for _, q in spec.examples]
        assert all("3 to 6 words" not in m["content"] for m in fact)


# --- the stage against a real server -------------------------------------------------------------


def _cfg(run_dir, *extra):
    return load_config(None, [
        f"run.dir={run_dir}", "ingest.source=builtin:python-docs", "domain=code", FIXTURE_GEN,
        "generate.sample_documents=2", "generate.max_chunks_per_document=1", "generate.questions_per_chunk=3",
        "generate.server_threads=1", *extra,
    ])


def _run(cfg, *names):
    from trainer.pipeline import run_pipeline

    return run_pipeline(cfg, to=names[-1] if names else "generate")


def test_generate_stage_with_embedded_server(tmp_path):
    cfg = _cfg(tmp_path)
    out = _run(cfg)[-1]
    counts = out.manifest["counts"]
    assert counts["tasks_planned"] == counts["tasks_done"] == 6
    assert counts["queries"] + counts["rejected"] == 6
    assert counts["judge"] == "off" and counts["llm_calls"] >= 6
    queries = datasets.load_from_disk(str(tmp_path / "stages/generate/queries"))
    chunks = {c["chunk_id"]: c for c in datasets.load_from_disk(str(tmp_path / "stages/ingest/chunks"))}
    for q in queries:
        assert q["query"] and q["type"] in {"factual", "contextual", "multi_hop"}
        assert q["hops"] == len(q["positive_chunk_ids"]) == len(q["hop_contexts"])
        assert q["hop_contexts"][0] == chunks[q["positive_chunk_ids"][0]]["text"]
        assert q["positive_doc_ids"] == sorted({chunks[c]["doc_id"] for c in q["positive_chunk_ids"]})
        assert q["generator"].startswith("gguf:smollm2") and q["prompt_version"] == PROMPT_VERSION
    card = (tmp_path / "stages/generate/README.md").read_text()
    assert "synthetic" in card and "never from evaluation queries" in card
    # re-run: up to date, no server started
    assert _run(cfg)[-1].action == "skipped"


def test_external_endpoint_retries_malformed_output_and_judge(tmp_path):
    from trainer.llm_server import LocalLLMServer
    from trainer.models import resolve_generator

    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv, \
            FaultProxy(srv.base_url) as proxy:
        proxy.fail, proxy.status = 2, 503  # the endpoint is busy at first
        proxy.garbage = 2                  # then answers nonsense twice
        cfg = _cfg(tmp_path, f"generate.endpoint={proxy.base_url}", "generate.judge=on",
                   "generate.judge_threshold=1", "generate.structured_output=llama.cpp", "generate.concurrency=1",
                   "generate.questions_per_chunk=2")
        counts = _run(cfg)[-1].manifest["counts"]
    assert proxy.requests >= 4 + 2 + 2  # 4 tasks, the 2 failures retried, 2 garbage answers re-asked
    assert counts["tasks_done"] == 4 and counts["judge"] == "on"
    assert counts["generator"].startswith("endpoint:http://127.0.0.1")
    rejected = [json.loads(x) for x in (tmp_path / "stages/generate/rejected.jsonl").read_text().splitlines()]
    queries = datasets.load_from_disk(str(tmp_path / "stages/generate/queries")).to_list()
    assert len(queries) + len(rejected) == 4
    # a kept query has judge scores; one the judge could not score is counted, not kept
    for q in queries:
        assert q["judge_overall"] is not None and 1 <= q["judge_overall"] <= 10
    assert all(r["reason"] != "invalid_output:invalid_json" or r["query"] for r in rejected)


def test_a_query_copying_its_passage_is_asked_again_with_a_new_seed(tmp_path):
    from trainer.llm_server import LocalLLMServer
    from trainer.models import resolve_generator

    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv, \
            FaultProxy(srv.base_url) as proxy:
        proxy.copies = 3  # the first task's three attempts (invalid_retries=2) all copy their passage
        cfg = _cfg(tmp_path, f"generate.endpoint={proxy.base_url}", "generate.structured_output=llama.cpp",
                   "generate.concurrency=1", "generate.judge=off")
        counts = _run(cfg)[-1].manifest["counts"]
    assert len(proxy.copied) == 3 and counts["tasks_done"] == 6
    rejected = [json.loads(x) for x in (tmp_path / "stages/generate/rejected.jsonl").read_text().splitlines()]
    copies = [r for r in rejected if r["query"] in proxy.copied]
    # one task rejected after its retries, the last copy recorded; no other task saw a copy
    assert [(r["reason"], r["query"]) for r in copies] == [("copies_passage", proxy.copied[-1])]
    assert counts["llm_calls"] >= 3 + 5


def test_candidates_keep_the_answer_sharing_fewest_words_with_its_passage(tmp_path):
    from trainer.llm_server import LocalLLMServer
    from trainer.models import resolve_generator

    with LocalLLMServer(resolve_generator("smollm2-135m-instruct-q4_1"), n_threads=1) as srv, \
            FaultProxy(srv.base_url) as proxy:
        cfg = _cfg(tmp_path, f"generate.endpoint={proxy.base_url}", "generate.structured_output=llama.cpp",
                   "generate.concurrency=1", "generate.judge=off", "generate.candidates=3",
                   "generate.questions_per_chunk=1", "generate.dedupe_similarity=1.0")
        counts = _run(cfg)[-1].manifest["counts"]
    queries = datasets.load_from_disk(str(tmp_path / "stages/generate/queries")).to_list()
    assert queries and counts["llm_calls"] == len(proxy.answers) >= 3 * counts["tasks_done"]
    overlaps = []
    for q in queries:
        passage = q["hop_contexts"][0]
        valid = []
        for raw in (a for p, a in proxy.answers if p == passage):
            parsed, _ = parse_query(raw)
            if parsed and copy_reason(parsed, [passage], [], 0.6) is None:
                valid.append(word_overlap(parsed, [passage]))
        assert len(valid) >= 2  # several candidates were compared ...
        assert word_overlap(q["query"], [passage]) == min(valid)  # ... and the least copied one kept
        overlaps.append(min(valid))
    assert counts["mean_word_overlap"] == pytest.approx(sum(overlaps) / len(overlaps), abs=1e-3)


def test_killed_generation_resumes_without_asking_again(tmp_path, cli):
    args = ["run", "--to", "generate", "--run-dir", str(tmp_path), "--source", "builtin:python-docs",
            "--set", "domain=code", "--set", FIXTURE_GEN, "--set", "generate.sample_documents=2",
            "--set", "generate.max_chunks_per_document=1", "--set", "generate.server_threads=1",
            "--set", "generate.concurrency=1"]
    res = cli(*args, env={"DOMAIN_EMBED_CRASH_AT": "generate.call.3"})
    assert res.returncode == -9
    cache = next((tmp_path / "cache" / "llm").glob("*.jsonl"))
    answered = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(answered) == 3

    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert "generate: resumed" in res.stdout
    m = json.loads((tmp_path / "stages/generate/manifest.json").read_text())
    assert m["counts"]["cache_hits"] >= 3
    assert m["counts"]["llm_calls"] == len(cache.read_text().splitlines()) - 3
    assert m["counts"]["tasks_done"] == 6
    # neither server (the killed run's, the resumed run's) outlived its process
    import time

    from trainer._process import pid_alive

    pid = int((tmp_path / "stages/generate/server.pid").read_text())
    deadline = time.time() + 15
    while pid_alive(pid) and time.time() < deadline:
        time.sleep(0.2)
    assert not pid_alive(pid)


def test_a_rejected_token_stops_generation_with_one_message(tmp_path, cli):
    """A 401 is the token, not the structured-output request: no fallback, no retry, one message, exit 2."""
    with FaultProxy("http://127.0.0.1:9/v1") as proxy:  # answers 401 itself: no upstream is reached
        proxy.fail, proxy.status = 100, 401
        res = cli("run", "--to", "generate", "--run-dir", str(tmp_path), "--source", "builtin:python-docs",
                  "--set", "domain=code", "--set", f"generate.endpoint={proxy.base_url}",
                  "--set", "generate.sample_documents=1", "--set", "generate.max_chunks_per_document=1",
                  "--set", "generate.concurrency=1", env={"HF_TOKEN": "hf_PlantedFakeTokenForTests0123456789"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "rejected the token (HTTP 401" in res.stderr and "HF_TOKEN" in res.stderr
    assert "structured output" not in res.stderr and "Traceback" not in res.stderr
    assert "PlantedFakeToken" not in res.stderr
    assert proxy.requests <= 2  # the task that failed and the one queued behind it: no retry, no fallback


def test_generation_sample_and_test_split_are_independent():
    """Same seed, different purposes: the held-out documents must not be exactly the unsampled ones."""
    from trainer.mine import split_documents

    chunks = _chunks(78, 1)
    cfg = load_config(None, ["generate.sample_documents=60", "generate.questions_per_chunk=1"])
    sampled = {t.chunk_ids[0].split("#")[0] for t in plan_tasks(chunks, cfg)}
    held_out = split_documents([c["doc_id"] for c in chunks], 0.2, cfg.run.seed)
    assert len(sampled) == 60 and len(held_out) == 16
    assert sampled & held_out  # some generated queries land in the test split


def test_generator_identity_never_holds_a_credential():
    """The identity goes into the cache key, the manifest, every published row and the dataset card."""
    cfg = load_config(None, ["generate.endpoint=https://tgi.example.com/v1/", "generate.model=tgi"])
    assert generator_identity(cfg) == "endpoint:https://tgi.example.com/v1|tgi"
    token = "tgi-Zx9Qm2LpR7tVbN4cKw8YjH3sDf6GaE1uW5"
    # a config built in code, past validation (model_copy does not validate)
    raw = cfg.generate.model_copy(update={"endpoint": f"https://bob:{token}@tgi.example.com/v1?api_key={token}"})
    identity = generator_identity(cfg.model_copy(update={"generate": raw}))
    assert identity == "endpoint:https://tgi.example.com/v1|tgi"
