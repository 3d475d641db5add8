"""Regenerate the generated parts of the docs: the stage-contract table in README.md and docs/CONFIG.md.

Run ``python scripts/update_docs.py`` after changing a stage's reads/writes or a setting's description;
tests/test_cli.py fails until the docs match the code.
"""

from pathlib import Path

from trainer.cli import explain_table
from trainer.pipeline import contracts_table

ROOT = Path(__file__).resolve().parents[1]


def replace_between(path: Path, marker: str, body: str) -> None:
    text = path.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    head, rest = text.split(start)
    _, tail = rest.split(end)
    path.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}", encoding="utf-8")


if __name__ == "__main__":
    replace_between(ROOT / "README.md", "stage-contracts", contracts_table())
    replace_between(ROOT / "docs" / "CONFIG.md", "config-reference", explain_table())
    print("updated README.md (stage contracts) and docs/CONFIG.md")
