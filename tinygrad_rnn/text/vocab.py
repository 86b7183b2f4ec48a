"""Vocabularies: characters (Unicode code points) or words, with a fixed id for every token."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np

UNK = "<unk>"

_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def tokenize_words(text: str) -> list[str]:
    """Lower-cased words; each punctuation mark is a token of its own (so samples keep it)."""
    return _WORD.findall(text.lower())


class Vocab:
    """Maps tokens to ids and back.

    Character vocabularies hold every code point of the training text, sorted, so the same
    text always gives the same ids (Python strings index code points, so a multi-byte UTF-8
    character is one token). They have no `<unk>`: encoding a character the model never saw is
    an error that names it, because silently replacing it would make a prime mean something
    else. Word vocabularies keep the `max_size` most frequent words plus `<unk>` (id 0), which
    stands for every word left out.
    """

    def __init__(self, tokens, level: str = "char", unk: str | None = None):
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', got {level!r}")
        self.tokens = list(tokens)
        self.level = level
        self.unk = unk
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ValueError("vocabulary tokens must be unique")
        if unk is not None and unk not in self.index:
            raise ValueError(f"unk token {unk!r} is not in the vocabulary")

    @classmethod
    def from_text(cls, text: str, level: str = "char", max_size: int | None = None) -> "Vocab":
        if level == "char":
            return cls(sorted(set(text)), "char")
        counts = Counter(tokenize_words(text))
        # most frequent first; ties alphabetical so the vocabulary is deterministic
        words = sorted(counts, key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - 1)]
        return cls([UNK] + words, "word", unk=UNK)

    def __len__(self) -> int:
        return len(self.tokens)

    def split_tokens(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else tokenize_words(text)

    def encode(self, text: str) -> np.ndarray:
        if self.level == "char" and self.unk is None:
            return self._encode_chars(text)
        toks = self.split_tokens(text)
        if self.unk is None:
            unseen = sorted({t for t in toks if t not in self.index})
            if unseen:
                shown = ", ".join(repr(t) for t in unseen[:10])
                raise KeyError(f"{len(unseen)} character(s) not in the vocabulary: {shown}"
                               f"{' ...' if len(unseen) > 10 else ''}; the model was trained without them")
            return np.fromiter((self.index[t] for t in toks), dtype=np.int64, count=len(toks))
        unk = self.index[self.unk]
        return np.fromiter((self.index.get(t, unk) for t in toks), dtype=np.int64, count=len(toks))

    def _encode_chars(self, text: str) -> np.ndarray:
        # code points through numpy: a 10 MB text in well under a second, where a Python loop
        # over characters took 2.4 s
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        known = np.array([ord(t) for t in self.tokens], dtype=np.uint32)
        found = np.zeros(0, np.int64)
        if known.size:
            order = np.argsort(known)
            found = order[np.minimum(np.searchsorted(known, codes, sorter=order), known.size - 1)]
        if not np.array_equal(known[found], codes):
            unseen = sorted(set(text) - set(self.tokens))
            shown = ", ".join(repr(t) for t in unseen[:10])
            raise KeyError(f"{len(unseen)} character(s) not in the vocabulary: {shown}"
                           f"{' ...' if len(unseen) > 10 else ''}; the model was trained without them")
        return found.astype(np.int64)

    def decode(self, ids) -> str:
        toks = [self.tokens[int(i)] for i in np.asarray(ids).reshape(-1)]
        return "".join(toks) if self.level == "char" else " ".join(toks)

    def to_dict(self) -> dict:
        """JSON-safe form, stored inside checkpoints."""
        return {"tokens": self.tokens, "level": self.level, "unk": self.unk}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocab":
        return cls(d["tokens"], d["level"], d.get("unk"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Vocab({len(self)} {self.level}s)"
