"""Prompts for synthetic query generation and judging, per MTEB subcategory.

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

PROMPT_VERSION = "v2"

_AUDIENCE = {
    "medical": "a clinician or biomedical researcher searching the literature",
    "scientific": "a scientist checking a claim against the literature",
    "legal": "a lawyer searching for the statutes and precedents that apply to a matter",
    "code": "a software developer searching documentation",
    "general": "a curious person using a search engine",
}

_STYLE = {
    ("medical", "factual"): "a short clinical or biomedical claim (one sentence) that the passage supports",
    ("medical", "contextual"): "a clinical question about causes, mechanisms, effects or treatment that the "
                               "passage answers",
    ("scientific", "factual"): "a short scientific claim (one sentence) that the passage supports or refutes",
    ("scientific", "contextual"): "a research question about why or how, which the passage answers",
    ("legal", "factual"): "a legal-issue query: the rule, right or offence in question, in a lawyer's words",
    ("legal", "contextual"): "a case-fact query: one or two sentences describing a situation whose legal "
                             "answer is in the passage",
    ("code", "factual"): "a natural-language code-search query (how do I ... / what does ... do) that this "
                         "documentation answers",
    ("code", "contextual"): "a question about when or why to use this feature, or how it behaves",
    ("general", "factual"): "a factual search question answered by the passage",
    ("general", "contextual"): "a question needing the passage's context to answer",
}

_EXAMPLES = {
    "medical": [
        ("Metformin reduces hepatic gluconeogenesis and improves insulin sensitivity in peripheral tissues, "
         "lowering fasting glucose in type 2 diabetes.", "Metformin lowers fasting blood sugar by suppressing "
         "glucose production in the liver."),
        ("In a cohort of 1,200 smokers, low-dose CT screening detected stage I lung cancers twice as often as "
         "chest radiography.", "Does CT screening find early lung cancer more often than X-rays in smokers?"),
    ],
    "scientific": [
        ("Knockout mice lacking the FOXP2 gene showed impaired ultrasonic vocalisation and abnormal "
         "cerebellar development.", "FOXP2 is required for normal vocal communication in mice."),
        ("Global ocean heat content rose by 0.6 W/m2 between 2005 and 2020, driven mostly by the upper 700 m.",
         "Most recent ocean warming has happened in the deep ocean."),
    ],
    "legal": [
        ("Whoever, intending to take dishonestly any movable property out of the possession of any person "
         "without that person's consent, moves that property, is said to commit theft.",
         "What are the ingredients of the offence of theft of movable property?"),
        ("The appellant was detained without being told the grounds of his arrest and was not produced "
         "before a magistrate within twenty-four hours.", "Police held a man for two days without telling "
         "him why or bringing him before a judge; was his detention lawful?"),
    ],
    "code": [
        ("sorted(iterable, *, key=None, reverse=False): Return a new sorted list from the items in iterable. "
         "key specifies a function of one argument used to extract a comparison key.",
         "how to sort a list of dicts by a field in python"),
        ("The with statement is used to wrap the execution of a block with methods defined by a context "
         "manager, so that common try/finally usage patterns can be encapsulated.",
         "why use a context manager instead of try finally"),
    ],
}
_EXAMPLES["general"] = [
    (_EXAMPLES["scientific"][0][0], "What happens to mice without the FOXP2 gene?"),
    (_EXAMPLES["scientific"][1][0], "How much has the upper ocean warmed since 2005?"),
]

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


def _style(domain: str, qtype: str) -> str:
    base = "contextual" if qtype == "multi_hop" else qtype
    return _STYLE.get((domain, base)) or _STYLE[("general", base)]


def _passages(texts: list[str]) -> str:
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(f"[{i}] {t}" for i, t in enumerate(texts, start=1))


def query_messages(domain: str, qtype: str, texts: list[str]) -> list[dict[str, str]]:
    """Chat messages asking for one query of ``qtype`` about ``texts`` (several for multi-hop)."""
    audience = _AUDIENCE.get(domain, _AUDIENCE["general"])
    system = (
        f"You write search queries for {audience}. Write the query the searcher would type BEFORE "
        "reading the text: paraphrase in your own words, do not copy sentences or the title, and never "
        'mention "the passage", "the text", "the study" or "the document". '
        'Reply with JSON only: {"query": "..."}.'
    )
    msgs = [{"role": "system", "content": system}]
    for passage, query in _EXAMPLES.get(domain, _EXAMPLES["general"]):
        msgs.append({"role": "user", "content": f"Text:\n{passage}\n\nWrite {_style(domain, 'factual')}."})
        msgs.append({"role": "assistant", "content": json.dumps({"query": query})})
    task = _style(domain, qtype)
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
