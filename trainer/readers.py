"""Corpus readers: turn a source (folder, BEIR folder, saved dataset, Hub id, built-in corpus) into
documents, and every unusable input into a counted, explained skip (never a traceback).

Folders are walked in sorted path order, never through a symbolic link, so nothing is read twice and
nothing outside the corpus is read. Every link is resolved once and counted as a skip with its reason:

- ``symlink_duplicate``: the target is inside the corpus; it is read (or skipped) under its own path
- ``symlink_loop``: the target is a folder that contains the link, or the link never resolves
- ``symlink_outside``: the target leaves the corpus (``passwd.txt -> /etc/passwd`` is never read)
- ``symlink_dangling``: the target does not exist

Folders that cannot be listed (``unreadable``) and FIFOs, sockets or devices (``not_a_file``) are
counted too. The run directory, when it lies inside the corpus, is skipped once (``run_dir``). Ids
with a control character (a tab or newline in a file name or an id column) are refused (``bad_id``):
they would break the TSV and JSONL lines later stages write.

Example::

    >>> from trainer.config import IngestConfig
    >>> items = list(iter_documents(IngestConfig(source="builtin:python-docs")))
    >>> docs = [d for d in items if isinstance(d, Document)]
    >>> len(docs) > 50 and docs[0].source == "builtin:python-docs"
    True
"""

from __future__ import annotations

import csv
import errno
import hashlib
import html.parser
import io
import json
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.beir import has_control_chars, shown
from trainer.config import IngestConfig
from trainer.errors import InputError
from trainer.models import hub_reachable, is_offline
from trainer.paths import data_path

TEXT_FIELDS = ("text", "content", "body", "abstract", "passage", "document", "contents")
ID_FIELDS = ("_id", "id", "doc_id", "docid")
TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".html", ".htm"}
TABLE_SUFFIXES = {".jsonl", ".csv", ".parquet", ".pdf"}
BUILTINS = ("python-docs",)
_MB = 1024 * 1024
@dataclass(frozen=True)
class Document:
    doc_id: str
    title: str
    text: str
    source: str


@dataclass(frozen=True)
class Skip:
    source: str
    reason: str
    detail: str


# --- source detection -----------------------------------------------------------------------------


def resolve_source(cfg: IngestConfig) -> tuple[str, str | Path]:
    """(kind, location) with kind in folder, beir, saved, hub, builtin, file."""
    src = cfg.source
    if not src:
        raise InputError(
            "no corpus given: set ingest.source to a folder, a BEIR folder, 'hub:<dataset id>' or "
            "'builtin:python-docs' (CLI: --source PATH)"
        )
    if src.startswith("builtin:"):
        name = src.split(":", 1)[1]
        if name not in BUILTINS:
            raise InputError(f"unknown built-in corpus {name!r}; available: {', '.join(BUILTINS)}")
        return "builtin", name
    if src.startswith("hub:"):
        return "hub", src.split(":", 1)[1]
    path = data_path(src.split(":", 1)[1]) if src.startswith("data:") else Path(src).expanduser()
    if path.is_file():
        return "file", path
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return "beir", path
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "saved", path
        return "folder", path
    if "/" in src and not src.startswith((".", "/", "~")) and src.count("/") == 1 and not path.exists():
        return "hub", src  # looks like org/name
    raise InputError(f"corpus not found: {src} (no such file or folder)")


def source_fingerprint(cfg: IngestConfig, exclude: Sequence[Path] = ()) -> dict[str, str]:
    """What identifies the input's content, for the stage key (for a folder: the files it reads)."""
    kind, loc = resolve_source(cfg)
    digest = hashlib.sha256()
    if kind == "builtin":
        from pydoc_data.topics import topics

        digest.update(json.dumps(topics, sort_keys=True).encode())
        return {"kind": kind, "name": str(loc), "python": sys.version.split()[0], "sha256": digest.hexdigest()}
    if kind == "hub":
        return {"kind": kind, "dataset": str(loc), "revision": _hub_revision(str(loc), cfg)}
    path = Path(loc)
    if kind == "folder":
        files = [item for item in _walk(path, exclude) if not isinstance(item, Skip)]
    elif kind == "beir":
        files = [(path / "corpus.jsonl", "corpus.jsonl")]
    elif kind == "file":
        files = [(path, path.name)]
    else:
        files = [(p, str(p.relative_to(path))) for p in sorted(path.rglob("*")) if p.is_file()]
    for f, rel in files:
        digest.update(rel.encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return {"kind": kind, "path": str(path.resolve()), "sha256": digest.hexdigest()}


def _offline_hub_error(dataset: str) -> InputError:
    return InputError(
        f"cannot download Hub dataset {dataset!r}: the Hub is not reachable (offline or "
        "HF_HUB_OFFLINE=1). Fix: on a connected machine run\n"
        f"  python -c \"import datasets; datasets.load_dataset('{dataset}', split='train')"
        ".save_to_disk('corpus_dir')\"\n"
        "copy corpus_dir here and set ingest.source=corpus_dir (or export the rows to a .jsonl file)."
    )


def _hub_revision(dataset: str, cfg: IngestConfig) -> str:
    if is_offline() or not hub_reachable():
        raise _offline_hub_error(dataset)
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(dataset, revision=cfg.hub_revision).sha or (cfg.hub_revision or "main")
    except Exception as exc:  # noqa: BLE001 - report any Hub failure as an input error
        raise InputError(f"Hub dataset {dataset!r} (revision {cfg.hub_revision or 'main'}): {exc}") from None


# --- decoding and per-format readers ----------------------------------------------------------------


def _decode(data: bytes, mode: str) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        if mode == "latin-1":
            try:
                return data.decode("cp1252")
            except UnicodeDecodeError:
                return data.decode("latin-1")
        if mode == "replace":
            return data.decode("utf-8", errors="replace")
        return None


def _looks_binary(data: bytes) -> bool:
    head = data[:8192]
    if b"\x00" in head:
        return True
    control = sum(1 for b in head if b < 9 or 13 < b < 32)
    return bool(head) and control / len(head) > 0.1


class _HTMLText(html.parser.HTMLParser):
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "head"})
    _BLOCK = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article",
              "pre", "blockquote", "table", "ul", "ol", "dd", "dt", "header", "footer"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        if tag in self._SKIP:
            self._skip += 1
        if tag == "title":
            self._in_title = True
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in self._SKIP and self._skip:
            self._skip -= 1
        if tag == "title":
            self._in_title = False
        if tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> tuple[str, str]:
    parser = _HTMLText()
    parser.feed(markup)
    parser.close()
    text = "".join(parser.parts)
    lines = [" ".join(line.split()) for line in text.split("\n")]
    out, blank = [], False
    for line in lines:
        if line:
            out.append(line)
            blank = False
        elif not blank and out:
            out.append("")
            blank = True
    return parser.title.strip(), "\n".join(out).strip()


def _markdown_title(text: str) -> str:
    for line in text.splitlines()[:20]:
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _pick(columns: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    if wanted:
        return wanted if wanted in columns else None
    lower = {c.lower(): c for c in columns}
    return next((lower[c] for c in candidates if c in lower), None)


class _Records:
    """Shared handling of row-shaped inputs (jsonl, csv, parquet, saved and Hub datasets)."""

    def __init__(self, cfg: IngestConfig, source: str):
        self.cfg, self.source = cfg, source
        self.limit = int(cfg.max_document_mb * _MB)

    def columns(self, columns: list[str]) -> tuple[str, str | None, str | None] | Skip:
        text = _pick(columns, self.cfg.text_column, TEXT_FIELDS)
        if text is None:
            want = self.cfg.text_column or " / ".join(TEXT_FIELDS)
            return Skip(self.source, "no_text_column",
                        f"no text column ({want}) among {columns}; set ingest.text_column")
        return text, _pick(columns, self.cfg.title_column, ("title",)), _pick(columns, self.cfg.id_column, ID_FIELDS)

    def row(self, row: dict, n: int, cols: tuple[str, str | None, str | None]) -> Document | Skip:
        text_col, title_col, id_col = cols
        where = f"{self.source}#{n}"
        text = row.get(text_col)
        if text is None or (isinstance(text, float) and text != text):
            return Skip(where, "empty", f"row {n} has no {text_col!r}")
        if not isinstance(text, str):
            return Skip(where, "bad_record", f"row {n}: {text_col!r} is {type(text).__name__}, not text")
        if len(text.encode("utf-8", errors="ignore")) > self.limit:
            return Skip(where, "too_large", f"row {n} is larger than ingest.max_document_mb={self.cfg.max_document_mb}")
        if not text.strip():
            return Skip(where, "empty", f"row {n} has empty text")
        title = row.get(title_col) if title_col else ""
        doc_id = row.get(id_col) if id_col else None
        doc_id = str(doc_id) if doc_id not in (None, "") else where
        return Document(doc_id, str(title or "").strip(), text, self.source)


def _read_jsonl(path: Path, rel: str, cfg: IngestConfig) -> Iterator[Document | Skip]:
    rec = _Records(cfg, rel)
    cols = None
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            line = _decode(raw, cfg.non_utf8)
            if line is None:
                yield Skip(f"{rel}#{n}", "not_utf8", f"line {n} is not UTF-8; set ingest.non_utf8=latin-1")
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Skip(f"{rel}#{n}", "bad_record", f"line {n} is not JSON: {exc.msg}")
                continue
            if not isinstance(row, dict):
                yield Skip(f"{rel}#{n}", "bad_record", f"line {n} is not a JSON object")
                continue
            if cols is None:
                cols = rec.columns(list(row))
                if isinstance(cols, Skip):
                    yield cols
                    return
            yield rec.row(row, n, cols)


def _read_frame(frame, rel: str, cfg: IngestConfig) -> Iterator[Document | Skip]:
    rec = _Records(cfg, rel)
    cols = rec.columns([str(c) for c in frame.columns])
    if isinstance(cols, Skip):
        yield cols
        return
    for n, row in enumerate(frame.to_dict(orient="records"), start=1):
        yield rec.row(row, n, cols)


_BAD_CSV_LINE = re.compile(r"Skipping line (\d+): ([^\n]+)")  # pandas' warning for a malformed row


def _read_csv(text: str, rel: str, cfg: IngestConfig) -> Iterator[Document | Skip]:
    import pandas as pd

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        try:
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, on_bad_lines="warn")
        except (pd.errors.ParserError, csv.Error, ValueError) as exc:
            yield Skip(rel, "bad_file", f"cannot parse CSV: {exc}")
            return
    # a malformed row (more fields than the header: an unquoted comma?) is skipped alone, not the file
    for w in caught:
        if not issubclass(w.category, pd.errors.ParserWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
            continue
        found = _BAD_CSV_LINE.findall(str(w.message))
        for line, why in found:
            yield Skip(f"{rel}:{line}", "bad_record", f"line {line}: {why}; only this row is skipped "
                       "(quote fields that hold a comma)")
        if not found:  # pandas worded it differently: still counted
            yield Skip(rel, "bad_record", f"CSV rows skipped: {str(w.message).strip()}")
    yield from _read_frame(frame, rel, cfg)


def _read_pdf(path: Path, rel: str, cfg: IngestConfig) -> Iterator[Document | Skip]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(str(path))
        if reader.is_encrypted and not reader.decrypt(""):
            yield Skip(rel, "pdf_encrypted", "password-protected PDF; decrypt it first (qpdf --decrypt)")
            return
        pages = [page.extract_text() or "" for page in reader.pages]
        title = str((reader.metadata or {}).get("/Title") or "").strip()
    except (PdfReadError, ValueError, KeyError, TypeError, OSError) as exc:
        yield Skip(rel, "pdf_unreadable", f"cannot read PDF: {exc}")
        return
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        yield Skip(rel, "pdf_no_text", "PDF has no extractable text (scanned? run OCR first)")
        return
    yield _Records(cfg, rel).row({"text": text, "title": title or path.stem, "id": rel}, 1, ("text", "title", "id"))


def _read_file(path: Path, rel: str, cfg: IngestConfig) -> Iterator[Document | Skip]:
    suffix = path.suffix.lower()
    size = path.stat().st_size
    if suffix not in TEXT_SUFFIXES | TABLE_SUFFIXES:
        yield Skip(rel, "unsupported_type", f"{suffix or 'no extension'} is not one of "
                   f"{' '.join(sorted(TEXT_SUFFIXES | TABLE_SUFFIXES))}")
        return
    if size == 0:
        yield Skip(rel, "empty", "file is empty")
        return
    limit_mb = cfg.max_document_mb if suffix in TEXT_SUFFIXES else cfg.max_file_mb
    if size > limit_mb * _MB:
        setting = "max_document_mb" if suffix in TEXT_SUFFIXES else "max_file_mb"
        yield Skip(rel, "too_large", f"{size / _MB:.1f} MB is over ingest.{setting}={limit_mb}; "
                   "raise it or split the file")
        return
    if suffix == ".pdf":
        yield from _read_pdf(path, rel, cfg)
        return
    if suffix == ".parquet":
        import pandas as pd

        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any parse failure is a counted skip
            yield Skip(rel, "bad_file", f"cannot read parquet: {exc}")
            return
        yield from _read_frame(frame, rel, cfg)
        return
    with path.open("rb") as fh:
        head = fh.read(8192)
    if _looks_binary(head):
        yield Skip(rel, "binary", f"binary content in a {suffix} file")
        return
    if suffix == ".jsonl":
        yield from _read_jsonl(path, rel, cfg)
        return
    text = _decode(path.read_bytes(), cfg.non_utf8)
    if text is None:
        yield Skip(rel, "not_utf8", "not UTF-8 text; set ingest.non_utf8=latin-1 (or re-encode: "
                   "iconv -f latin1 -t utf-8)")
        return
    if suffix == ".csv":
        yield from _read_csv(text, rel, cfg)
        return
    title = ""
    if suffix in {".html", ".htm"}:
        title, text = html_to_text(text)
    elif suffix in {".md", ".markdown"}:
        title = _markdown_title(text)
    if not text.strip():
        yield Skip(rel, "empty", "no text after extraction")
        return
    yield Document(rel, title or path.stem.replace("_", " "), text, rel)


# --- sources --------------------------------------------------------------------------------------


def _walk(root: Path, exclude: Sequence[Path] = ()) -> Iterator[tuple[Path, str] | Skip]:
    """Regular files under root in sorted path order, as (path, relative path); the link policy and
    the skipped folders (``exclude``: the run directory) are described in the module docstring."""
    real_root = Path(os.path.realpath(root))
    excluded = {Path(os.path.realpath(p)) for p in exclude}
    yield from _walk_folder(root, real_root, (), real_root, excluded)


def _walk_folder(folder: Path, real: Path, parts: tuple[str, ...], real_root: Path,
                 excluded: set[Path]) -> Iterator[tuple[Path, str] | Skip]:
    # `real` is folder's resolved path: the walk never goes through a link, so it is real_root/parts
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        yield Skip("/".join(parts) or ".", "unreadable", f"cannot list the folder: {exc.strerror}")
        return
    for entry in entries:
        names = (*parts, entry.name)
        rel, path = "/".join(names), folder / entry.name
        is_dir = entry.is_dir(follow_symlinks=False)
        if real / entry.name in excluded:
            yield Skip(rel, "run_dir", "the run directory (run.dir) is never read as corpus")
        elif any(name.startswith(".") for name in names):
            if is_dir:  # as before: each file in a hidden folder is counted
                yield from _walk_folder(path, real / entry.name, names, real_root, excluded)
            else:
                yield Skip(rel, "hidden", "hidden file")
        elif entry.is_symlink():
            yield _link_skip(path, rel, real, real_root)
        elif is_dir:
            yield from _walk_folder(path, real / entry.name, names, real_root, excluded)
        elif not entry.is_file(follow_symlinks=False):
            yield Skip(rel, "not_a_file", "not a regular file (a FIFO, socket or device)")
        elif has_control_chars(rel):
            yield Skip(shown(rel), "bad_id", "the file name holds a control character (tab, newline, ...) "
                       "that would break the TSV/JSONL lines the path is written to as the id: rename it")
        else:
            yield path, rel


def _link_skip(link: Path, rel: str, folder_real: Path, real_root: Path) -> Skip:
    """Why the link at rel (in the folder whose resolved path is folder_real) is not followed."""
    try:
        os.stat(link)  # follows the whole chain
    except FileNotFoundError:
        return Skip(rel, "symlink_dangling", f"link to {os.readlink(link)}, which does not exist")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Skip(rel, "symlink_loop", "the link never resolves: its chain of links loops back on itself")
        return Skip(rel, "unreadable", f"cannot follow the link: {exc.strerror}")
    target = Path(os.path.realpath(link))
    if not target.is_relative_to(real_root):
        return Skip(rel, "symlink_outside", f"link to {target}, outside the corpus: links leaving the corpus are "
                    "never followed; copy what it points to into the corpus to use it")
    inside = target.relative_to(real_root).as_posix() or "."
    if folder_real.is_relative_to(target):
        return Skip(rel, "symlink_loop", f"link to {inside}, a folder that contains the link")
    return Skip(rel, "symlink_duplicate", f"link to {inside} in the corpus, which is read (or skipped) under "
                "that path, never twice")


def _iter_dataset(ds, label: str, cfg: IngestConfig) -> Iterator[Document | Skip]:
    rec = _Records(cfg, label)
    cols = rec.columns(list(ds.column_names))
    if isinstance(cols, Skip):
        raise InputError(f"{label}: {cols.detail}")
    for n, row in enumerate(ds, start=1):
        yield rec.row(row, n, cols)


def _iter_raw(cfg: IngestConfig, exclude: Sequence[Path]) -> Iterator[Document | Skip]:
    kind, loc = resolve_source(cfg)
    if kind == "builtin":
        from pydoc_data.topics import topics

        for name in sorted(topics):
            yield Document(f"python-docs/{name}", name.replace("-", " "), topics[name], "builtin:python-docs")
    elif kind == "beir":
        yield from _read_jsonl(Path(loc) / "corpus.jsonl", "corpus.jsonl", cfg)
    elif kind == "file":
        yield from _read_file(Path(loc), Path(loc).name, cfg)
    elif kind == "folder":
        for item in _walk(Path(loc), exclude):
            if isinstance(item, Skip):
                yield item
            else:
                yield from _read_file(item[0], item[1], cfg)
    elif kind == "saved":
        import datasets

        ds = datasets.load_from_disk(str(loc))
        if isinstance(ds, datasets.DatasetDict):
            if cfg.hub_split not in ds:
                raise InputError(f"{loc} has splits {list(ds)}; set ingest.hub_split to one of them")
            ds = ds[cfg.hub_split]
        yield from _iter_dataset(ds, Path(loc).name, cfg)
    elif kind == "hub":
        if is_offline() or not hub_reachable():
            raise _offline_hub_error(str(loc))
        import datasets

        try:
            ds = datasets.load_dataset(str(loc), split=cfg.hub_split, revision=cfg.hub_revision)
        except Exception as exc:  # noqa: BLE001 - surfaced as an actionable input error
            raise InputError(f"cannot load Hub dataset {loc!r} split {cfg.hub_split!r}: {exc}") from None
        yield from _iter_dataset(ds, f"hub:{loc}", cfg)


def normalized_hash(text: str) -> str:
    return hashlib.sha256(" ".join(text.split()).lower().encode()).hexdigest()


def iter_documents(cfg: IngestConfig, exclude: Sequence[Path] = ()) -> Iterator[Document | Skip]:
    """Documents in a deterministic order, de-duplicated, ids made unique; skips along the way.
    Folders in ``exclude`` (the run directory) are not read."""
    seen_text: dict[str, str] = {}
    seen_ids: set[str] = set()
    kept = 0
    for item in _iter_raw(cfg, exclude):
        if isinstance(item, Skip):
            yield item
            continue
        if has_control_chars(item.doc_id):
            yield Skip(shown(item.doc_id), "bad_id", "the id holds a control character (tab, newline, ...) that "
                       "would break the TSV/JSONL lines it is written to: fix the id column (ingest.id_column) "
                       "or rename the file")
            continue
        if cfg.max_documents is not None and kept >= cfg.max_documents:
            yield Skip(item.doc_id, "over_max_documents", f"ingest.max_documents={cfg.max_documents} reached")
            continue
        digest = normalized_hash(item.text)
        if cfg.dedupe and digest in seen_text:
            yield Skip(item.doc_id, "duplicate", f"same text as {seen_text[digest]}")
            continue
        seen_text.setdefault(digest, item.doc_id)
        doc_id, n = item.doc_id, 2
        while doc_id in seen_ids:
            doc_id, n = f"{item.doc_id}~{n}", n + 1
        seen_ids.add(doc_id)
        kept += 1
        yield Document(doc_id, item.title, item.text, item.source) if doc_id != item.doc_id else item
