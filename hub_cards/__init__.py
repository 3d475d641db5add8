"""Hub cards (dataset and model cards) generated from a run's config and manifests.

Cards are built with huggingface_hub's card classes so the Hub renders their metadata; they never
contain secrets (tokens are read from the environment at push time only).
"""

from typing import Any


def counts_rows(counts: dict[str, Any]) -> str:
    """Markdown table rows ("| what | count |") for a stage's counts; dicts are shown inline."""
    rows = []
    for key, value in counts.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        rows.append(f"| {key.replace('_', ' ')} | {value} |")
    return "\n".join(rows)
