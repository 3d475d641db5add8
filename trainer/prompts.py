"""Prompts for synthetic query generation and judging, per MTEB subcategory (audience, query styles
and few-shot examples come from the domain registry, trainer.domains).

Each prompt shows the model written examples (few-shot turns), so small and base models follow the
format too, asks for paraphrase rather than copying, and never invites "in the passage" phrasing.
PROMPT_VERSION changes whenever a prompt's text changes (it is part of every cached request key).

Example::

    >>> msgs = query_messages("medical", "factual", ["Metformin lowers hepatic glucose output."])
    >>> msgs[0]["role"], msgs[-1]["role"]
    ('system', 'user')
"""

from __future__ import annotations

import json

from trainer.domains import DOMAINS

PROMPT_VERSION = "v2"

QUERY_SCHEMA = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 8, "maxLength": 400}},
    "required": ["query"],
}
JUDGE_FIELDS = ("relevance", "accuracy", "support", "clarity", "overall")
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {f: {"type": "integer", "minimum": 1, "maximum": 10} for f in JUDGE_FIELDS},
    "required": list(JUDGE_FIELDS),
}


def _passages(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts, start=1))


def query_messages(domain: str, qtype: str, texts: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for one query of ``qtype`` about ``texts`` (several for multi-hop)."""
    spec = DOMAINS.get(domain, DOMAINS["general"])
    audience = spec.audience
    system = (
        f"You write search queries for {audience}. Write the query the searcher would type BEFORE "
        "reading the text: paraphrase in your own words, do not copy sentences or the title, and never "
        'mention "the passage", "the text", "the study" or "the document". '
        'Reply with JSON only: {"query": "..."}.'
    )
    msgs = [{"role": "system", "content": system}]
    # keyword queries get keyword examples; every other type keeps the factual ones (their text, and so the
    # cached answers, do not change)
    shot = "keyword" if qtype == "keyword" and len(spec.keywords) == len(spec.examples) else "factual"
    for i, (passage, query) in enumerate(spec.examples):
        msgs.append({"role": "user", "content": f"Text:\n{passage}\n\nWrite {spec.style(shot)}."})
        msgs.append({"role": "assistant", "content": json.dumps({"query": spec.keywords[i] if shot == "keyword"
                                                                   else query})})
    task = spec.style(qtype)
    if qtype == "multi_hop":
        task += f"; it must need facts from ALL {len(texts)} texts together, not just one of them"
    msgs.append({"role": "user", "content": f"Text:\n{_passages(texts)}\n\nWrite {task}."})
    return msgs


def judge_messages(domain: str, query: str, texts: list[str]) -> list[dict[str, str]]:
    system = (
        "You grade synthetic search queries for training a retrieval model. Score each criterion from 1 "
        "(bad) to 10 (excellent): relevance (a real searcher in this domain would ask it), accuracy (it is "
        "true to the text), support (the text fully answers or supports it), clarity (specific, "
        "self-contained, no reference to 'the passage'), overall. Reply with JSON only: "
        '{"relevance": n, "accuracy": n, "support": n, "clarity": n, "overall": n}.'
    )
    user = f"Domain: {domain}\n\nText:\n{_passages(texts)}\n\nQuery: {query}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]
