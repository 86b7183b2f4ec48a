"""Text for language models: vocabularies, corpora, and batches of (input, target) windows."""
from .batching import BatchStream, split  # noqa: F401
from .corpora import CorpusError, builtin_text, download, load_corpus, read_text  # noqa: F401
from .vocab import Vocab, tokenize_words  # noqa: F401
