"""Vocabularies, corpora (including the download path, against a local HTTP server) and batching."""
import hashlib
import http.server
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinygrad_rnn.text import BatchStream, CorpusError, Vocab, builtin_text, download, read_text, split
from tinygrad_rnn.text import corpora


def test_char_vocab_round_trips_non_ascii_and_is_sorted():
    text = "héllo wörld — 日本語 🙂\n"
    v = Vocab.from_text(text)
    assert v.tokens == sorted(set(text)) and "🙂" in v.tokens  # one token per code point
    assert v.decode(v.encode(text)) == text
    assert Vocab.from_dict(v.to_dict()) == v


def test_unseen_character_is_an_error_that_names_it():
    v = Vocab.from_text("abc")
    with pytest.raises(KeyError, match="'z'"):
        v.encode("abz")


def test_word_vocab_caps_size_and_maps_the_rest_to_unk():
    v = Vocab.from_text("the cat sat on the mat. the end", level="word", max_size=4)
    assert v.tokens == ["<unk>", "the", ".", "cat"]
    assert v.decode(v.encode("the dog sat")) == "the <unk> <unk>"


def test_builtin_corpus_is_real_text():
    text = builtin_text()
    assert len(text) > 100_000 and "def " in text and "the" in text


def test_read_text_errors(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café".encode("latin-1"))
    with pytest.raises(CorpusError, match=r"not UTF-8 \(byte 0xe9 at offset 3\).*iconv"):
        read_text(latin)
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(CorpusError, match="binary"):
        read_text(binary)
    big = tmp_path / "big.txt"
    big.write_text("x" * 100)
    with pytest.raises(CorpusError, match="over the 10-byte limit"):
        read_text(big, max_bytes=10)
    with pytest.raises(CorpusError, match="does not exist"):
        read_text(tmp_path / "missing.txt")


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path over HTTP on localhost: the download code is tested without the network."""
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    handler_quiet = server.RequestHandlerClass
    handler_quiet.log_message = lambda *a: None
    th = threading.Thread(target=server.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", tmp_path
    server.shutdown()


def test_download_verifies_checksum_and_caches(http_server, tmp_path_factory):
    url, served = http_server
    body = "To be, or not to be\n".encode()
    (served / "corpus.txt").write_bytes(body)
    dest = tmp_path_factory.mktemp("cache") / "corpus.txt"
    good = hashlib.sha256(body).hexdigest()
    assert download(f"{url}/corpus.txt", dest, good).read_bytes() == body
    (served / "corpus.txt").unlink()  # cached: a second call must not fetch again
    assert download(f"{url}/corpus.txt", dest, good) == dest


def test_download_with_wrong_checksum_saves_nothing(http_server, tmp_path_factory):
    url, served = http_server
    (served / "evil.txt").write_bytes(b"tampered")
    dest = tmp_path_factory.mktemp("cache") / "evil.txt"
    with pytest.raises(CorpusError, match="expected"):
        download(f"{url}/evil.txt", dest, "0" * 64)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_named_corpus_uses_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TINYGRAD_RNN_CACHE", str(tmp_path))
    body = b"tiny corpus"
    monkeypatch.setitem(corpora.KNOWN, "tiny", ("http://127.0.0.1:9/never", hashlib.sha256(body).hexdigest(), 11))
    (tmp_path / "tiny.txt").write_bytes(body)  # already cached: no network needed
    assert corpora.load_corpus("tiny") == "tiny corpus"


def test_shared_shakespeare_matches_the_known_checksum():
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt not present")
    url, sha, size = corpora.KNOWN["shakespeare"]
    assert corpora._sha256(path) == sha and path.stat().st_size == size
    text = read_text(path)
    assert len(text) == 1_115_394 and len(Vocab.from_text(text)) == 65


def test_split_is_contiguous_and_complete():
    ids = np.arange(100)
    tr, va, te = split(ids, 0.1, 0.2)
    assert len(tr) == 70 and len(va) == 10 and len(te) == 20
    np.testing.assert_array_equal(np.concatenate([tr, va, te]), ids)
    with pytest.raises(ValueError):
        split(ids, 0.6, 0.5)


@settings(deadline=None, max_examples=40)
@given(n=st.integers(50, 400), B=st.integers(1, 5), T=st.integers(1, 9), epoch=st.integers(0, 3),
       scheme=st.sampled_from(["sequential", "random"]))
def test_batches_shift_targets_by_one_and_do_not_repeat(n, B, T, epoch, scheme):
    ids = np.arange(n)  # token value == position, so every check is exact
    try:
        s = BatchStream(ids, B, T, scheme, seed=1)
    except ValueError:
        assert (n - T) // B // T < 1 or (n - T) // T // B < 1
        return
    seen = []
    for i in range(s.batches_per_epoch):
        X, Y = s.batch(epoch, i)
        assert X.shape == Y.shape == (B, T)
        np.testing.assert_array_equal(Y, X + 1)
        np.testing.assert_array_equal(np.diff(X, axis=1), 1)  # each row is a contiguous window
        seen.append(X)
    allx = np.concatenate([x.reshape(-1) for x in seen])
    assert len(np.unique(allx)) == len(allx)  # no position is used twice within an epoch
    # an epoch leaves out less than one batch plus the random offset and the row ends
    assert len(allx) > n - 2 * T - B * (T + 1)
    if scheme == "sequential" and s.batches_per_epoch > 1:
        # batch i+1 continues batch i row by row: carrying the hidden state is correct
        X0, _ = s.batch(epoch, 0)
        X1, _ = s.batch(epoch, 1)
        np.testing.assert_array_equal(X1[:, 0], X0[:, -1] + 1)


def test_batches_are_a_pure_function_of_seed_epoch_index():
    s1 = BatchStream(np.arange(500), 3, 7, "random", seed=5)
    s2 = BatchStream(np.arange(500), 3, 7, "random", seed=5)
    np.testing.assert_array_equal(s1.batch(2, 4)[0], s2.batch(2, 4)[0])
    assert not np.array_equal(s1.batch(0, 0)[0], s1.batch(1, 0)[0])


def test_char_encoding_equals_a_lookup_per_character_in_any_token_order():
    text = "Ünïcode ✓ 𝄞 and ascii\n\ttoo " * 50
    vocab = Vocab.from_text(text)
    shuffled = Vocab.from_dict({"tokens": vocab.tokens[::-1], "level": "char", "unk": None})
    for v in (vocab, shuffled):
        expect = np.array([v.index[c] for c in text], dtype=np.int64)
        assert np.array_equal(v.encode(text), expect)
        assert v.decode(v.encode(text)) == text
    assert vocab.encode("").shape == (0,)
