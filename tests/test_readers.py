"""Per-format readers and the handling of every kind of bad input (each a counted skip)."""

import json

import pandas as pd
import pytest

from trainer.config import IngestConfig
from trainer.errors import InputError
from trainer.readers import Document, Skip, html_to_text, iter_documents, resolve_source

from .helpers import minimal_pdf

GOOD = "Insulin lowers blood glucose. It acts on the liver and muscle. Resistance causes type 2 diabetes."


def read(path, **kw):
    items = list(iter_documents(IngestConfig(source=str(path), **kw)))
    return [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, Skip)]


def only_skip(tmp_path, name, data, **kw):
    (tmp_path / "ok.txt").write_text(GOOD)
    (tmp_path / name).write_bytes(data)
    docs, skips = read(tmp_path, **kw)
    assert [d.doc_id for d in docs] == ["ok.txt"]
    assert len(skips) == 1 and skips[0].source.startswith(name)
    return skips[0]


def test_empty_file(tmp_path):
    skip = only_skip(tmp_path, "empty.txt", b"")
    assert skip.reason == "empty"


def test_whitespace_only_file(tmp_path):
    assert only_skip(tmp_path, "blank.md", b"  \n\n\t ").reason == "empty"


def test_binary_file_with_text_extension(tmp_path):
    skip = only_skip(tmp_path, "blob.txt", bytes(range(256)) * 40)
    assert skip.reason == "binary"


def test_unsupported_extension(tmp_path):
    skip = only_skip(tmp_path, "picture.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    assert skip.reason == "unsupported_type" and ".png" in skip.detail


def test_non_utf8_is_skipped_with_the_fix_named(tmp_path):
    skip = only_skip(tmp_path, "latin.txt", "Café au lait. Crème brûlée.".encode("latin-1"))
    assert skip.reason == "not_utf8" and "ingest.non_utf8=latin-1" in skip.detail


def test_non_utf8_can_be_decoded_as_latin1(tmp_path):
    (tmp_path / "latin.txt").write_bytes("Café au lait. Crème brûlée.".encode("latin-1"))
    docs, skips = read(tmp_path, non_utf8="latin-1")
    assert docs[0].text == "Café au lait. Crème brûlée." and not skips


def test_fifty_megabyte_document(tmp_path):
    (tmp_path / "ok.txt").write_text(GOOD)
    with (tmp_path / "huge.txt").open("w") as fh:
        line = "This sentence repeats to make a very large document. " * 20 + "\n"
        while fh.tell() < 50 * 1024 * 1024:
            fh.write(line)
    docs, skips = read(tmp_path)
    assert [d.doc_id for d in docs] == ["ok.txt"]
    assert skips[0].reason == "too_large" and "max_document_mb" in skips[0].detail


def test_duplicate_documents_keep_the_first(tmp_path):
    (tmp_path / "a.txt").write_text(GOOD)
    (tmp_path / "b.txt").write_text("  " + GOOD.upper() + "\n")  # same text after normalisation
    docs, skips = read(tmp_path)
    assert [d.doc_id for d in docs] == ["a.txt"]
    assert skips[0].reason == "duplicate" and "a.txt" in skips[0].detail


def test_hidden_files_are_counted(tmp_path):
    assert only_skip(tmp_path, ".secret.txt", GOOD.encode()).reason == "hidden"


def test_broken_pdf(tmp_path):
    assert only_skip(tmp_path, "broken.pdf", b"%PDF-1.4 garbage").reason == "pdf_unreadable"


def test_pdf_text_and_title(tmp_path):
    (tmp_path / "paper.pdf").write_bytes(minimal_pdf("Statins reduce LDL cholesterol.", title="Statin trial"))
    docs, skips = read(tmp_path)
    assert not skips
    assert "Statins reduce LDL cholesterol." in docs[0].text and docs[0].title == "Statin trial"


def test_html_drops_scripts_and_keeps_title():
    title, text = html_to_text(
        "<html><head><title>Aspirin</title><script>var x=1;</script></head>"
        "<body><h1>Dose</h1><p>Take 100 mg.</p><style>p{}</style><p>Daily.</p></body></html>"
    )
    assert title == "Aspirin"
    assert text == "Dose\n\nTake 100 mg.\n\nDaily."


def test_jsonl_rows_with_bad_lines(tmp_path):
    rows = [json.dumps({"id": "r1", "title": "T1", "text": GOOD}), "{not json", json.dumps({"id": "r2", "text": ""}),
            json.dumps([1, 2]), json.dumps({"id": "r3", "text": "Second document. With two sentences."})]
    (tmp_path / "rows.jsonl").write_text("\n".join(rows) + "\n")
    docs, skips = read(tmp_path)
    assert [(d.doc_id, d.title) for d in docs] == [("r1", "T1"), ("r3", "")]
    assert sorted(s.reason for s in skips) == ["bad_record", "bad_record", "empty"]


def test_jsonl_without_text_column_names_the_setting(tmp_path):
    (tmp_path / "rows.jsonl").write_text(json.dumps({"foo": "bar"}) + "\n")
    docs, skips = read(tmp_path)
    assert not docs and skips[0].reason == "no_text_column" and "ingest.text_column" in skips[0].detail
    docs, _ = read(tmp_path, text_column="foo")
    assert docs[0].text == "bar"


def test_csv_and_parquet(tmp_path):
    frame = pd.DataFrame({"doc_id": ["c1", "c2"], "content": [GOOD, "Another row. Of text."], "title": ["A", "B"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.assign(doc_id=["p1", "p2"], content=["Parquet one.", "Parquet two."]).to_parquet(tmp_path / "t.parquet")
    docs, skips = read(tmp_path)
    assert [d.doc_id for d in docs] == ["c1", "c2", "p1", "p2"] and not skips


def test_markdown_title(tmp_path):
    (tmp_path / "guide.md").write_text("# Install guide\n\nRun pip. Then test.")
    docs, _ = read(tmp_path)
    assert docs[0].title == "Install guide"


def test_duplicate_ids_are_made_unique(tmp_path):
    lines = [json.dumps({"id": "x", "text": "First text here."}), json.dumps({"id": "x", "text": "Other text here."})]
    (tmp_path / "r.jsonl").write_text("\n".join(lines))
    docs, _ = read(tmp_path)
    assert [d.doc_id for d in docs] == ["x", "x~2"]


def test_max_documents(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.txt").write_text(f"Document {i} is unique. It has words.")
    docs, skips = read(tmp_path, max_documents=2)
    assert len(docs) == 2 and [s.reason for s in skips] == ["over_max_documents"] * 3


def test_beir_folder_reads_only_the_corpus(tmp_path):
    (tmp_path / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": GOOD}) + "\n")
    (tmp_path / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what lowers glucose?"}) + "\n")
    assert resolve_source(IngestConfig(source=str(tmp_path)))[0] == "beir"
    docs, skips = read(tmp_path)
    assert [d.doc_id for d in docs] == ["d1"] and not skips


def test_saved_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"id": ["s1"], "text": [GOOD]}).save_to_disk(str(tmp_path / "saved"))
    docs, _ = read(tmp_path / "saved")
    assert docs[0].doc_id == "s1"


def test_hub_dataset_offline_names_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError) as info:
        list(iter_documents(IngestConfig(source="hub:BeIR/scifact")))
    msg = str(info.value)
    assert "not reachable" in msg and "save_to_disk" in msg and "ingest.source=corpus_dir" in msg


def test_missing_source_and_unknown_builtin(tmp_path):
    with pytest.raises(InputError, match="no corpus given"):
        list(iter_documents(IngestConfig()))
    with pytest.raises(InputError, match="not found"):
        list(iter_documents(IngestConfig(source=str(tmp_path / "nope"))))
    with pytest.raises(InputError, match="unknown built-in"):
        list(iter_documents(IngestConfig(source="builtin:nope")))
    with pytest.raises(InputError, match="DOMAIN_EMBED_DATA"):
        list(iter_documents(IngestConfig(source="data:no-such-set")))
