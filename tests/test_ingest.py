"""The ingest stage end to end through the CLI: real corpora, a folder of bad files, resume, idempotence."""

import json
import os

import datasets
import pytest

from trainer.rundir import fingerprint_dir

from .helpers import minimal_pdf

GOOD = "Insulin lowers blood glucose. It acts on the liver and muscle. Resistance causes type 2 diabetes."


def manifest(run_dir):
    return json.loads((run_dir / "stages" / "ingest" / "manifest.json").read_text())


def load(run_dir, name):
    return datasets.load_from_disk(str(run_dir / "stages" / "ingest" / name))


def check_offsets(run_dir):
    docs = {d["doc_id"]: d["text"] for d in load(run_dir, "documents")}
    chunks = load(run_dir, "chunks")
    for c in chunks:
        assert docs[c["doc_id"]][c["start"]:c["end"]] == c["text"]
    return docs, chunks


@pytest.mark.shared_data
def test_ingest_aila_statutes(cli, shared_data, tmp_path):
    res = cli("ingest", "--source", str(shared_data / "aila_statutes"), "--run-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    counts = manifest(tmp_path)["counts"]
    assert counts["documents"] == 82 and counts["skipped"] == 0
    docs, chunks = check_offsets(tmp_path)
    assert set(chunks["doc_id"]) == set(docs)  # every document has chunks
    assert max(chunks["n_tokens"]) <= counts["max_chunk_tokens"] == 254


@pytest.mark.shared_data
def test_ingest_scifact(cli, shared_data, tmp_path):
    res = cli("ingest", "-c", "configs/scifact.yaml", "--run-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    counts = manifest(tmp_path)["counts"]
    assert counts["documents"] == 5183 and counts["skipped"] == 0
    assert counts["chunks"] > 5183 and counts["docs_without_chunks"] == 0
    assert (tmp_path / "stages" / "ingest" / "README.md").read_text().startswith("---\n")


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    (root / "good.txt").write_text(GOOD)
    (root / "notes.md").write_text("# Notes\n\nMetformin is first-line therapy. It is cheap and safe.")
    (root / "page.html").write_text("<title>Page</title><script>x()</script><p>Statins lower LDL. They are safe.</p>")
    (root / "paper.pdf").write_bytes(minimal_pdf("Beta blockers slow the heart rate."))
    (root / "rows.jsonl").write_text(json.dumps({"id": "r1", "text": "A jsonl row. With text."}) + "\n{broken\n")
    (root / "empty.txt").write_bytes(b"")
    (root / "binary.txt").write_bytes(b"\x00\x01\x02" * 5000)
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    (root / "latin.txt").write_bytes("Café crème. Très bien.".encode("latin-1"))
    (root / "copy.txt").write_text(GOOD)
    (root / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    with (root / "huge.txt").open("w") as fh:
        while fh.tell() < 50 * 1024 * 1024:
            fh.write("A very long document keeps going and going. " * 50 + "\n")
    return root


def test_mixed_bad_folder_counts_every_skip(cli, bad_folder, tmp_path):
    res = cli("ingest", "--source", str(bad_folder), "--run-dir", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    counts = manifest(tmp_path)["counts"]
    assert counts["documents"] == 5  # good, notes, page, paper, one jsonl row
    assert counts["skipped_by_reason"] == {
        "bad_record": 1, "binary": 1, "duplicate": 1, "empty": 1, "not_utf8": 1, "pdf_unreadable": 1,
        "too_large": 1, "unsupported_type": 1,
    }
    skipped = [json.loads(line) for line in (tmp_path / "stages/ingest/skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == counts["skipped"] == 8
    assert all(s["detail"] for s in skipped)
    assert "8 inputs skipped" in res.stderr  # the user is told, not just the manifest
    check_offsets(tmp_path)


def test_folder_with_nothing_usable_is_a_clear_error(cli, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "empty.txt").write_bytes(b"")
    (src / "x.bin").write_bytes(b"\0\0")
    res = cli("ingest", "--source", str(src), "--run-dir", str(tmp_path / "run"))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "error: no usable documents" in res.stderr
    assert "empty: 1" in res.stderr and "unsupported_type: 1" in res.stderr
    assert (tmp_path / "run/stages/ingest/skipped.jsonl").is_file()


def test_bad_config_and_missing_source_are_clear_errors(cli, tmp_path):
    res = cli("ingest", "--run-dir", str(tmp_path), "--set", "ingest.chunk_sentences=zero")
    assert res.returncode == 2 and "ingest.chunk_sentences" in res.stderr and "Traceback" not in res.stderr
    res = cli("ingest", "--run-dir", str(tmp_path))
    assert res.returncode == 2 and "no corpus given" in res.stderr


def test_rerun_is_a_noop_and_a_changed_setting_archives(cli, tmp_path):
    args = ("ingest", "--source", "builtin:python-docs", "--run-dir", str(tmp_path))
    assert cli(*args).returncode == 0
    first = manifest(tmp_path)
    stamp = os.stat(tmp_path / "stages/ingest/chunks").st_mtime_ns
    res = cli(*args)
    assert res.returncode == 0 and "ingest: skipped" in res.stdout
    assert manifest(tmp_path) == first
    assert os.stat(tmp_path / "stages/ingest/chunks").st_mtime_ns == stamp

    res = cli(*args, "--set", "ingest.chunk_sentences=3")
    assert res.returncode == 0 and "ingest: ran" in res.stdout
    assert "ingest.chunk_sentences: 5 -> 3" in res.stderr  # says what changed
    archived = list((tmp_path / "archive").glob("ingest-*"))
    assert len(archived) == 1 and (archived[0] / "chunks").is_dir()
    assert manifest(tmp_path)["counts"]["chunks"] > first["counts"]["chunks"]


def test_killed_ingest_resumes_to_an_identical_result(cli, tmp_path):
    common = ("--source", "builtin:python-docs", "--set", "ingest.shard_size=20")
    clean, crashed = tmp_path / "clean", tmp_path / "crashed"
    assert cli("ingest", *common, "--run-dir", str(clean)).returncode == 0

    res = cli("ingest", *common, "--run-dir", str(crashed), env={"DOMAIN_EMBED_CRASH_AT": "ingest.shard.2"})
    assert res.returncode == -9  # SIGKILL: nothing could clean up
    assert manifest(crashed)["status"] == "running"
    assert len(list((crashed / "stages/ingest/_work").glob("shard-*"))) == 2

    res = cli("ingest", *common, "--run-dir", str(crashed))
    assert res.returncode == 0 and "ingest: resumed" in res.stdout
    m = manifest(crashed)
    assert m["counts"]["shards_reused"] == 2 and m["counts"]["shards"] == 4 and m["attempts"] == 2
    assert not (crashed / "stages/ingest/_work").exists()
    assert m["output_fingerprint"] == manifest(clean)["output_fingerprint"]
    assert fingerprint_dir(crashed / "stages/ingest") == fingerprint_dir(clean / "stages/ingest")
    assert load(crashed, "chunks").to_list() == load(clean, "chunks").to_list()
