"""Saving stage outputs as Hugging Face datasets, atomically (a killed save never leaves half a dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.files import atomic_dir

# A feature spec: column -> "string" / "int32" / ... or ["string"] for a list of that type.
Spec = dict[str, Any]


def features(spec: Spec):
    import datasets

    return datasets.Features({
        k: datasets.Sequence(datasets.Value(v[0])) if isinstance(v, list) else datasets.Value(v)
        for k, v in spec.items()
    })


def save_rows(rows: list[dict[str, Any]], dest: Path, spec: Spec) -> None:
    """Write ``rows`` as a dataset at ``dest`` (replacing it only once the new one is complete).

    datasets 5.0 cannot load back a dataset saved with zero rows, so empty outputs are an error the
    caller must handle (stages report why nothing was produced instead).
    """
    import datasets

    if not rows:
        raise ValueError(f"refusing to save an empty dataset at {dest}")
    ds = datasets.Dataset.from_list(rows, features=features(spec))
    with atomic_dir(dest) as tmp:
        ds.save_to_disk(str(tmp))


def save_dataset(ds, dest: Path) -> None:
    """Atomically save an existing Dataset at ``dest``."""
    with atomic_dir(dest) as tmp:
        ds.save_to_disk(str(tmp))
