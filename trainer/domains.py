"""The domain registry: what each MTEB subcategory means to every stage, declared in one place.

A :class:`DomainSpec` holds, per subcategory, the MTEB benchmark whose retrieval tasks define it
(task names are read from mteb's own benchmark metadata, shipped in the wheel, never copied here),
who searches in it and how (prompt audience, query styles, few-shot examples), the corpus the Space
offers by default, and the MTEB task whose local BEIR folder checks the int8 export. Config, the
prompts, evaluate, export, the cards and the Space ask this module; none keeps its own list.

- medical: the retrieval tasks of ``MTEB(Medical, v1)`` with English data;
- legal: the retrieval tasks of ``MTEB(Law, v1)`` with English data;
- code: the retrieval tasks of ``MTEB(Code, v1)``;
- scientific: the ``BEIR`` tasks whose mteb domains include "Academic" (and at most three domains,
  which leaves out the catch-all MSMARCO and CQADupstack);
- general: the retrieval tasks of ``MTEB(eng, v2)``.

Example::

    >>> get_domain("legal").benchmark
    'MTEB(Law, v1)'
    >>> domain_tasks("legal")[:3]
    ['AILACasedocs', 'AILAStatutes', 'LegalSummarization']
    >>> task_dataset("SciFact")
    'mteb/scifact'
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from trainer.errors import ConfigError

DEFAULT_BASE = "sentence-transformers/all-MiniLM-L6-v2"


def _english(meta: Any) -> bool:
    return "eng" in set(meta.languages)


def _academic(meta: Any) -> bool:
    return _english(meta) and "Academic" in (meta.domains or []) and len(meta.domains or []) <= 3


@dataclass(frozen=True)
class DomainSpec:
    """One subcategory. ``styles``: query type ('factual', 'contextual', 'keyword') -> what the generator writes;
    ``examples``: few-shot (passage, query) pairs; ``keywords``: a keyword query for each example passage;
    ``default_corpus``: an ``ingest.source`` value;
    ``parity_task``: an MTEB task whose local BEIR folder (under $DOMAIN_EMBED_DATA) the export stage's
    int8 check and parity passages use when present."""

    name: str
    benchmark: str
    audience: str
    styles: Mapping[str, str]
    examples: tuple[tuple[str, str], ...]
    keywords: tuple[str, ...] = ()
    default_corpus: str = "builtin:python-docs"
    parity_task: str | None = None
    task_filter: Callable[[Any], bool] = field(default=_english, repr=False)

    def tasks(self) -> list[str]:
        """The retrieval task names of this subcategory, in benchmark order (from mteb's metadata)."""
        return list(_benchmark_tasks(self.name))

    def style(self, qtype: str) -> str:
        base = "contextual" if qtype == "multi_hop" else qtype
        return self.styles.get(base) or GENERAL_STYLES[base]


GENERAL_STYLES = {
    "factual": "a factual search question answered by the passage",
    "contextual": "a question needing the passage's context to answer",
    "keyword": "a short keyword search (3 to 6 words, no full sentence) that this text answers",
}

_SCIENTIFIC_EXAMPLES = (
    ("Knockout mice lacking the FOXP2 gene showed impaired ultrasonic vocalisation and abnormal "
     "cerebellar development.", "FOXP2 is required for normal vocal communication in mice."),
    ("Global ocean heat content rose by 0.6 W/m2 between 2005 and 2020, driven mostly by the upper 700 m.",
     "Most recent ocean warming has happened in the deep ocean."),
)

_SPECS = (
    DomainSpec(
        name="medical",
        benchmark="MTEB(Medical, v1)",
        audience="a clinician or biomedical researcher searching the literature",
        styles={
            "factual": "a short clinical or biomedical claim (one sentence) that the passage supports",
            "contextual": "a clinical question about causes, mechanisms, effects or treatment that the passage "
                          "answers",
            "keyword": "a short keyword search (3 to 6 words, no full sentence) a clinician would type into "
                       "PubMed to find this text",
        },
        examples=(
            ("Metformin reduces hepatic gluconeogenesis and improves insulin sensitivity in peripheral tissues, "
             "lowering fasting glucose in type 2 diabetes.", "Metformin lowers fasting blood sugar by suppressing "
             "glucose production in the liver."),
            ("In a cohort of 1,200 smokers, low-dose CT screening detected stage I lung cancers twice as often as "
             "chest radiography.", "Does CT screening find early lung cancer more often than X-rays in smokers?"),
        ),
        keywords=("metformin hepatic glucose output", "low-dose CT lung cancer screening smokers"),
        default_corpus="data:scifact",
        parity_task="SciFact",
    ),
    DomainSpec(
        name="legal",
        benchmark="MTEB(Law, v1)",
        audience="a lawyer searching for the statutes and precedents that apply to a matter",
        styles={
            "factual": "a legal-issue query: the rule, right or offence in question, in a lawyer's words",
            "contextual": "a case-fact query: one or two sentences describing a situation whose legal answer is "
                          "in the passage",
            "keyword": "a short keyword search (3 to 6 words, no full sentence) a lawyer would type into a "
                       "legal database to find this text",
        },
        examples=(
            ("Whoever, intending to take dishonestly any movable property out of the possession of any person "
             "without that person's consent, moves that property, is said to commit theft.",
             "What are the ingredients of the offence of theft of movable property?"),
            ("The appellant was detained without being told the grounds of his arrest and was not produced "
             "before a magistrate within twenty-four hours.", "Police held a man for two days without telling "
             "him why or bringing him before a judge; was his detention lawful?"),
        ),
        keywords=("ingredients of theft movable property", "detention without grounds of arrest"),
        default_corpus="data:aila_casedocs",
        parity_task="AILAStatutes",
    ),
    DomainSpec(
        name="scientific",
        benchmark="BEIR",
        audience="a scientist checking a claim against the literature",
        styles={
            "factual": "a short scientific claim (one sentence) that the passage supports or refutes",
            "contextual": "a research question about why or how, which the passage answers",
            "keyword": "a short keyword search (3 to 6 words, no full sentence) a scientist would type into a "
                       "literature search engine to find this text",
        },
        examples=_SCIENTIFIC_EXAMPLES,
        keywords=("FOXP2 knockout mice vocalization", "upper ocean heat content trend"),
        default_corpus="data:scifact",
        parity_task="SciFact",
        task_filter=_academic,
    ),
    DomainSpec(
        name="code",
        benchmark="MTEB(Code, v1)",
        audience="a software developer searching documentation",
        styles={
            "factual": "a natural-language code-search query (how do I ... / what does ... do) that this "
                       "documentation answers",
            "contextual": "a question about when or why to use this feature, or how it behaves",
            "keyword": "a short web-search query (3 to 6 words, no full sentence) a developer would type to "
                       "find this code or documentation",
        },
        examples=(
            ("sorted(iterable, *, key=None, reverse=False): Return a new sorted list from the items in iterable. "
             "key specifies a function of one argument used to extract a comparison key.",
             "how to sort a list of dicts by a field in python"),
            ("The with statement is used to wrap the execution of a block with methods defined by a context "
             "manager, so that common try/finally usage patterns can be encapsulated.",
             "why use a context manager instead of try finally"),
        ),
        keywords=("python sort list by key", "with statement context manager"),
        default_corpus="builtin:python-docs",
        task_filter=lambda meta: True,  # code tasks are tagged with programming languages, not "eng"
    ),
    DomainSpec(
        name="general",
        benchmark="MTEB(eng, v2)",
        audience="a curious person using a search engine",
        styles=GENERAL_STYLES,
        examples=(
            (_SCIENTIFIC_EXAMPLES[0][0], "What happens to mice without the FOXP2 gene?"),
            (_SCIENTIFIC_EXAMPLES[1][0], "How much has the upper ocean warmed since 2005?"),
        ),
        keywords=("FOXP2 gene mice vocalization", "ocean warming since 2005"),
        default_corpus="data:scifact",
        parity_task="SciFact",
    ),
)

DOMAINS: Mapping[str, DomainSpec] = MappingProxyType({s.name: s for s in _SPECS})
DOMAIN_NAMES: tuple[str, ...] = tuple(DOMAINS)
SUBCATEGORIES: tuple[str, ...] = ("medical", "legal", "scientific", "code")  # the MTEB subcategories users pick


def get_domain(name: str) -> DomainSpec:
    try:
        return DOMAINS[name]
    except KeyError:
        raise ConfigError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}") from None


@functools.lru_cache(maxsize=8)
def _benchmark_tasks(domain: str) -> tuple[str, ...]:
    import mteb

    spec = get_domain(domain)
    names: list[str] = []
    for task in mteb.get_benchmark(spec.benchmark).tasks:
        meta = task.metadata
        if meta.type == "Retrieval" and spec.task_filter(meta) and meta.name not in names:
            names.append(meta.name)
    return tuple(names)


def domain_tasks(domain: str) -> list[str]:
    """The retrieval task names of a subcategory, in benchmark order (from mteb's metadata)."""
    return get_domain(domain).tasks()


@functools.lru_cache(maxsize=256)
def task_dataset(task_name: str) -> str | None:
    """The Hub dataset an MTEB task reads (mteb's metadata), e.g. 'mteb/scifact'; None for an unknown task."""
    import mteb

    try:
        return str(mteb.get_task(task_name).metadata.dataset["path"])
    except Exception:  # noqa: BLE001 - not a registered task (a user's own folder)
        return None
