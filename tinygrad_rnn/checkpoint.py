"""Checkpoints that cannot run code when loaded and are never half-written.

Format: one `.npz` (a zip of `.npy` arrays, read with `allow_pickle=False`, so loading never
unpickles anything) holding the named arrays plus a JSON document for everything else
(config, vocabulary, step, RNG state), stored as a uint8 array under `__meta__.json`.

Writing goes to a temporary file in the same directory, is flushed to disk, then renamed over
the target: `os.replace` is atomic on POSIX, so a crash leaves either the old checkpoint or
the new one, never a torn file. Each zip member carries a CRC-32 that is checked on read, so
a truncated or corrupted file is reported, not half-loaded.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
import zipfile

import numpy as np

META_KEY = "__meta__.json"
FORMAT = "tinygrad_rnn.checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


def save(path, arrays: dict, meta: dict) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if name == META_KEY or not isinstance(arr, np.ndarray) or arr.dtype == object:
            raise CheckpointError(f"cannot save {name!r}: values must be numeric numpy arrays")
    doc = json.dumps({"format": FORMAT, **meta}, sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{META_KEY: np.frombuffer(doc, dtype=np.uint8)})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory) -> None:
    # the rename itself is only durable once the directory entry is on disk
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path) -> tuple[dict, dict]:
    """(arrays, meta). Raises CheckpointError for anything that is not an intact checkpoint."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} is damaged or not a checkpoint: {e}") from e
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise CheckpointError(f"checkpoint {str(path)!r} has no {META_KEY} entry")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} has unreadable metadata: {e}") from e
    if not isinstance(meta, dict) or meta.pop("format", None) != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r} is not in format {FORMAT}")
    return arrays, meta
