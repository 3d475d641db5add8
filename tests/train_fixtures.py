"""A tiny hand-written stand-in for the mine stage's output: medical and code query/passage rows with
hard negatives from the same domain, written through a real Stage so its manifest and fingerprint exist."""

from __future__ import annotations

import datasets

from trainer.rundir import Stage, StageContext

PAIRS = [
    ("what lowers blood sugar in type 2 diabetes",
     "Metformin reduces hepatic glucose production and is the first-line drug for type 2 diabetes."),
    ("first treatment for high blood pressure",
     "Thiazide diuretics and ACE inhibitors are common first choices for treating hypertension."),
    ("how do statins work",
     "Statins inhibit HMG-CoA reductase, lowering LDL cholesterol made by the liver."),
    ("symptoms of iron deficiency",
     "Iron deficiency anaemia causes fatigue, pale skin, brittle nails and shortness of breath."),
    ("what does insulin do",
     "Insulin lets muscle and fat cells take up glucose from the blood after a meal."),
    ("antibiotic for strep throat",
     "Penicillin or amoxicillin is the usual treatment for streptococcal pharyngitis."),
    ("cause of asthma attacks",
     "Asthma attacks follow airway inflammation and bronchospasm triggered by allergens or cold air."),
    ("how is vitamin D made",
     "The skin synthesises vitamin D from cholesterol when exposed to ultraviolet B sunlight."),
    ("reverse a list in python",
     "Call list.reverse() to reverse in place, or use slicing items[::-1] to get a reversed copy."),
    ("read a file line by line in python",
     "Open the file with a with-statement and iterate over the file object to get one line at a time."),
    ("sort a dictionary by value",
     "Use sorted(d.items(), key=lambda kv: kv[1]) to order a dict's items by their values."),
    ("python catch multiple exceptions",
     "An except clause can name a tuple of exception classes, e.g. except (ValueError, KeyError):"),
    ("merge two dicts python",
     "The | operator merges two dictionaries into a new one; |= updates a dictionary in place."),
    ("remove duplicates from a list",
     "Convert the list to a set to drop duplicates, or use dict.fromkeys(items) to keep the order."),
    ("python string to integer",
     "int('42') parses a decimal string into an integer and raises ValueError for bad input."),
    ("run code only when script is executed directly",
     "Put the code under if __name__ == '__main__': so it does not run when the module is imported."),
]


def rows(num_negatives: int = 3) -> list[dict[str, str]]:
    """anchor, positive, negative_1..k (same-domain passages of other queries), then query_id, positive_id."""
    out = []
    for i, (query, passage) in enumerate(PAIRS):
        block = 0 if i < 8 else 8
        others = [PAIRS[block + (i - block + j) % 8][1] for j in range(1, num_negatives + 1)]
        row = {"anchor": query, "positive": passage}
        row.update({f"negative_{j + 1}": neg for j, neg in enumerate(others)})
        row.update(query_id=f"q{i}", positive_id=f"p{i}")
        out.append(row)
    return out


def _run_fake_mine(ctx: StageContext) -> dict:
    data = rows(ctx.cfg.mine.num_negatives)
    datasets.Dataset.from_list(data).save_to_disk(str(ctx.dir / "train"))
    return {"rows": len(data)}


FAKE_MINE = Stage(name="mine", run=_run_fake_mine, sections=("mine.num_negatives",), writes=("train",))

# A few seconds per step on 2 shared CPU cores: 14 training rows, 32 tokens, batch 8.
TINY = [
    "mine.num_negatives=3", "train.max_seq_length=32", "train.batch_size=8", "train.epochs=3",
    "train.lr=1e-4", "train.warmup_ratio=0", "train.val_fraction=0.1", "train.min_val_queries=1",
    "train.eval_steps=2",
    "train.matryoshka_dims=[384, 128, 64]", "train.early_stopping_patience=null",
]
