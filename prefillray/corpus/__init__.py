"""Labeled query corpora: queries, correctness over target models (masked), costs."""

from prefillray.corpus.load import load_corpus
from prefillray.corpus.model import Corpus, CorpusError, query_id_for
from prefillray.corpus.store import load_saved_corpus, save_corpus

__all__ = ["Corpus", "CorpusError", "load_corpus", "load_saved_corpus", "query_id_for", "save_corpus"]
