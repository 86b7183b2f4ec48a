"""Corpora: any UTF-8 file, a built-in text that needs no network, and downloadable classics."""
from __future__ import annotations

import hashlib
import http.client
import os
import pathlib
import tempfile
import urllib.request

# name -> (url, sha256, size in bytes)
KNOWN = {
    "shakespeare": ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed", 1_115_394),
    "timemachine": ("http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
                    "8424dbd9532ac81f7e5f0b6add90e6952baea29158309d7d1bf3884f4e12c516", 178_979),
}
_CONTROL_BYTES = bytes([*range(0x01, 0x09), *range(0x0E, 0x20), 0x7F])  # not tab, newline, \v, \f, \r
MAX_BYTES = 1 << 30  # a corpus is read into memory whole; past 1 GiB that is a mistake, not a corpus


class CorpusError(ValueError):
    """A corpus that cannot be used, with what to do about it."""


def builtin_text() -> str:
    """CPython's own documentation topics (the `pydoc_data` package ships with every CPython):
    about 465,000 characters of real English prose and code, present offline on any machine,
    unlike a download, and far more text than our own sources."""
    import pydoc_data.topics

    topics = pydoc_data.topics.topics
    return "\n".join(topics[k] for k in sorted(topics))


def read_text(path, max_bytes: int = MAX_BYTES) -> str:
    """The whole of a UTF-8 text file, or a CorpusError saying why it is not a usable corpus."""
    path = pathlib.Path(path)
    where = f"corpus file {str(path)!r}"
    if not path.exists():
        raise CorpusError(f"{where} does not exist")
    if path.is_dir():
        raise CorpusError(f"{where} is a directory; pass a text file inside it")
    if not path.is_file():
        # a device or a pipe has no size to check and may never end (/dev/zero): not read at all
        raise CorpusError(f"{where} is not a regular file (a device, pipe or socket); copy the text into a file")
    size = path.stat().st_size
    if size > max_bytes:
        raise CorpusError(f"{where} is {size:,} bytes, over the {max_bytes:,}-byte limit; "
                          f"train on a slice of it (e.g. `head -c 100M`)")
    with open(path, "rb") as f:
        raw = f.read(max_bytes + 1)  # bounded even if the file grows after the size check
    if len(raw) > max_bytes:
        raise CorpusError(f"{where} grew past the {max_bytes:,}-byte limit while being read")
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise CorpusError(f"{where} contains a NUL byte (at offset {nul}): it looks binary, not text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        head = raw[:1 << 16]
        controls = len(head) - len(head.translate(None, _CONTROL_BYTES))
        if controls > 0.01 * len(head):  # text in another encoding has next to none; binary data has many
            raise CorpusError(f"{where} is not UTF-8 and {controls / len(head):.0%} of its first bytes are control "
                              f"characters: it looks binary, not text") from e
        raise CorpusError(f"{where} is not UTF-8 (byte {raw[e.start]:#04x} at offset "
                          f"{e.start}); convert it first, e.g. `iconv -f latin1 -t utf-8 {path} > {path}.utf8`") from e
    if not text:
        raise CorpusError(f"{where} is empty")
    return text


def cache_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TINYGRAD_RNN_CACHE", pathlib.Path.home() / ".cache" / "tinygrad_rnn"))


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest, sha256: str, timeout: float = 60) -> pathlib.Path:
    """Fetch `url` to `dest` unless a file with the right checksum is already there.

    The bytes land in a temporary file beside `dest` and are renamed into place only after
    the checksum matches, so an interrupted or corrupted download never poses as the corpus."""
    dest = pathlib.Path(dest)
    if dest.is_file() and _sha256(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    out.write(block)
        except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError and timeouts are OSErrors
            reason = getattr(e, "reason", None) or e
            raise CorpusError(f"download of {url} failed ({' '.join(str(reason).split())}); check the network, "
                              f"or fetch the file another way and pass its path: --corpus PATH") from None
        got = _sha256(tmp)
        if got != sha256:
            raise CorpusError(f"download of {url} has sha256 {got}, expected {sha256}; "
                              f"the file was not saved (retry, or pass the file's path instead)")
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return dest


def load_corpus(name_or_path: str | None = None) -> str:
    """`None`/"builtin": CPython's docs; "shakespeare"/"timemachine": downloaded once, cached,
    checksum-verified; anything else: a path to a UTF-8 file."""
    if name_or_path in (None, "builtin"):
        return builtin_text()
    if name_or_path in KNOWN:
        url, sha, _ = KNOWN[name_or_path]
        return read_text(download(url, cache_dir() / f"{name_or_path}.txt", sha))
    return read_text(name_or_path)
