"""Faults found by a hostile-user test of ingest (issue 18): each one is a counted skip, never silent."""

import json
import os

import pytest

from trainer.beir import load_qrels
from trainer.config import IngestConfig
from trainer.errors import InputError
from trainer.mine import Query, write_test_beir
from trainer.readers import Document, Skip, iter_documents, source_fingerprint

GOOD = "Insulin lowers blood glucose. It acts on the liver and muscle. Resistance causes type 2 diabetes."


def read(path, **kw):
    items = list(iter_documents(IngestConfig(source=str(path), **kw)))
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Skip)]


def reasons(skips):
    return sorted(s.reason for s in skips)


def test_ids_with_control_characters_are_refused(tmp_path):
    (tmp_path / "good.txt").write_text(GOOD)
    (tmp_path / "tab\tname.txt").write_text("A tab in the file name. It would split a TSV line.")
    (tmp_path / "new\nline.md").write_text("A newline in the file name. It would end a TSV line.")
    rows = [{"_id": "a\tb", "text": "Tab in a jsonl id. Second sentence."}, {"_id": "r2", "text": "Kept row. Fine."}]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.csv").write_text('id,text\n"c\nd",Newline in a csv id. Refused.\nc2,Kept csv row. Fine.\n')
    docs, skips = read(tmp_path)
    assert sorted(d.doc_id for d in docs) == ["c2", "good.txt", "r2"]
    assert reasons(skips) == ["bad_id"] * 4
    assert all(s.source.isprintable() for s in skips)  # shown escaped (a\tb), one line in the log
    assert {"a\\tb", "c\\nd", "tab\\tname.txt", "new\\nline.md"} == {s.source for s in skips}


def test_write_beir_refuses_an_id_that_would_break_a_qrels_line(tmp_path):
    def query(qid):
        return Query(qid, "what lowers glucose?", "factual", 1, [0], {"d"})

    write_test_beir(tmp_path / "ok", {"chunk_id": ["d#0"], "title": [""], "text": [GOOD]}, [query("q1")], ["d#0"])
    assert load_qrels(tmp_path / "ok" / "qrels" / "test.tsv") == {"q1": {"d#0": 1}}
    bad = "d\tx#0"  # written raw, evaluate later read "x#0" as the score
    with pytest.raises(InputError, match="bad_id"):
        write_test_beir(tmp_path / "bad", {"chunk_id": [bad], "title": [""], "text": [GOOD]}, [query("q1")], [bad])
    with pytest.raises(InputError, match=r"q\\n1"):
        chunks = {"chunk_id": ["d#0"], "title": [""], "text": [GOOD]}
        write_test_beir(tmp_path / "bad", chunks, [query("q\n1")], ["d#0"])
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.tmp").exists()


def test_symlinks_follow_one_policy_and_each_is_counted(tmp_path):
    corpus, outside = tmp_path / "corpus", tmp_path / "outside"
    (corpus / "sub").mkdir(parents=True)
    outside.mkdir()
    (corpus / "good.txt").write_text(GOOD)
    (corpus / "sub" / "inner.txt").write_text("Inner document. In a sub folder.")
    (outside / "passwd.txt").write_text("root:x:0:0:root:/root:/bin/bash. A secret outside the corpus.")
    os.symlink(corpus / "sub", corpus / "alias")  # inside: read once, as sub/
    os.symlink("good.txt", corpus / "again.txt")  # inside: read once, as good.txt
    os.symlink(".", corpus / "loop")  # the folder that holds it
    os.symlink("ring2", corpus / "ring1")
    os.symlink("ring1", corpus / "ring2")
    os.symlink("missing.txt", corpus / "dangling.txt")
    os.symlink(outside / "passwd.txt", corpus / "passwd.txt")
    os.symlink(outside, corpus / "elsewhere")
    docs, skips = read(corpus)
    assert [d.doc_id for d in docs] == ["good.txt", "sub/inner.txt"]
    assert {s.source: s.reason for s in skips} == {
        "again.txt": "symlink_duplicate", "alias": "symlink_duplicate", "loop": "symlink_loop",
        "ring1": "symlink_loop", "ring2": "symlink_loop", "dangling.txt": "symlink_dangling",
        "passwd.txt": "symlink_outside", "elsewhere": "symlink_outside",
    }
    assert all(s.detail for s in skips)
    # the stage key hashes what is read: a file outside the corpus is not even opened
    before = source_fingerprint(IngestConfig(source=str(corpus)))
    (outside / "passwd.txt").write_text("changed")
    assert source_fingerprint(IngestConfig(source=str(corpus))) == before


def test_run_dir_inside_the_corpus_is_never_ingested(cli, tmp_path):
    src = tmp_path / "corpus"
    src.mkdir()
    (src / "good.txt").write_text(GOOD)
    args = ("ingest", "--source", str(src), "--run-dir", str(src / "run"))
    assert cli(*args).returncode == 0
    manifest = json.loads((src / "run/stages/ingest/manifest.json").read_text())
    assert manifest["counts"]["documents"] == 1 and manifest["counts"]["skipped_by_reason"] == {"run_dir": 1}
    res = cli(*args)  # its own outputs do not change the input
    assert res.returncode == 0 and "ingest: skipped" in res.stdout
    res = cli(*args, "--set", "ingest.chunk_sentences=3")  # a re-run does not read the first run's README.md
    assert res.returncode == 0 and "ingest: ran" in res.stdout
    manifest = json.loads((src / "run/stages/ingest/manifest.json").read_text())
    assert manifest["counts"]["documents"] == 1 and manifest["counts"]["skipped_by_reason"] == {"run_dir": 1}


def test_a_malformed_csv_row_skips_only_that_row(tmp_path):
    (tmp_path / "t.csv").write_text(
        "text,title\nFirst row. Kept.,A\nAn unquoted, comma,B\nThird row. Kept too.,C\n"
    )
    docs, skips = read(tmp_path)
    assert [(d.doc_id, d.title) for d in docs] == [("t.csv#1", "A"), ("t.csv#2", "C")]
    assert [(s.source, s.reason) for s in skips] == [("t.csv:3", "bad_record")]
    assert "line 3" in skips[0].detail and "expected 2 fields, saw 3" in skips[0].detail
