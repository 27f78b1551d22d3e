"""Hypothesis strategies for the example model's inputs."""

from pathlib import Path

from hypothesis import strategies as st

CORPUS = Path(__file__).with_name("corpus.txt")


def corpus_words(path=CORPUS):
    """Sorted unique whitespace-separated words of the corpus."""
    return sorted(set(Path(path).read_text(encoding="utf-8").split()))


def sentences(min_words=1, max_words=12):
    """Sentences of 1-12 corpus words joined by single spaces."""
    return st.lists(st.sampled_from(corpus_words()), min_size=min_words, max_size=max_words).map(
        " ".join
    )
