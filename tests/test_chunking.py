import pytest
from transformers import AutoTokenizer

from trainer.chunking import Chunker, split_sentences
from trainer.models import resolve_model


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model("sentence-transformers/all-MiniLM-L6-v2", offline=True))


def sentences(text):
    return [text[a:b] for a, b in split_sentences(text)]


def test_sentence_split_respects_abbreviations_and_paragraphs():
    text = ("Dr. Smith et al. studied 12 patients, e.g. adults. Results were clear! Was it causal?\n\n"
            "# Methods\nWe used Fig. 2 data. U.S. trials agree.")
    assert sentences(text) == [
        "Dr. Smith et al. studied 12 patients, e.g. adults.",
        "Results were clear!",
        "Was it causal?",
        "# Methods\nWe used Fig. 2 data.",
        "U.S. trials agree.",
    ]


def test_code_fences_are_not_split():
    text = "Use this:\n\n```python\nx = 1. \nY = 2\n```\n\nThen run it. Done."
    parts = sentences(text)
    assert "```python\nx = 1. \nY = 2\n```" in parts


def test_chunks_are_exact_slices_within_budget(tokenizer):
    text = " ".join(f"Sentence number {i} talks about protein folding in yeast cells." for i in range(40))
    chunker = Chunker(tokenizer, max_tokens=60, sentences=5)
    chunks = chunker.chunk(text, title="Yeast")
    assert len(chunks) >= 8
    budget = chunker.budget("Yeast")
    for c in chunks:
        assert text[c.start:c.end] == c.text
        assert c.n_tokens == len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= budget
        assert c.n_sentences <= 5
    # chunks cover the document in order without gaps beyond whitespace
    covered = " ".join(c.text for c in chunks)
    assert covered == text


def test_five_sentences_per_chunk_when_they_fit(tokenizer):
    text = " ".join(f"Short fact {i}." for i in range(12))
    chunks = Chunker(tokenizer, max_tokens=254, sentences=5).chunk(text)
    assert [c.n_sentences for c in chunks] == [5, 5, 2]


def test_overlong_sentence_is_cut_at_token_boundaries(tokenizer):
    text = "word " * 600 + "end."
    chunker = Chunker(tokenizer, max_tokens=100, sentences=5, title_in_budget=False)
    chunks = chunker.chunk(text)
    assert len(chunks) == 7
    assert all(c.n_tokens <= 100 for c in chunks)
    assert all(text[c.start:c.end] == c.text for c in chunks)


def test_overlap_repeats_sentences(tokenizer):
    text = " ".join(f"Fact {i} holds." for i in range(9))
    chunks = Chunker(tokenizer, max_tokens=254, sentences=4, overlap=1).chunk(text)
    assert chunks[0].text.endswith("Fact 3 holds.") and chunks[1].text.startswith("Fact 3 holds.")
    with pytest.raises(ValueError, match="overlap"):
        Chunker(tokenizer, max_tokens=50, sentences=2, overlap=2)


def test_tiny_tail_is_merged(tokenizer):
    text = "A long first sentence about kidney function and filtration. Ok."
    chunks = Chunker(tokenizer, max_tokens=254, sentences=1, min_chars=10).chunk(text)
    assert len(chunks) == 1 and chunks[0].text == text


def test_empty_text_gives_no_chunks(tokenizer):
    assert Chunker(tokenizer, max_tokens=64).chunk("   \n\n  ") == []
