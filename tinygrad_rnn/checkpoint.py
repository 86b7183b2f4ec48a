"""Checkpoints that cannot run code when loaded and are never half-written.

Format: one `.npz` (a zip of `.npy` arrays, read with `allow_pickle=False`, so loading never
unpickles anything) holding the named arrays plus a JSON document for everything else
(config, vocabulary, step, RNG state), stored as a uint8 array under `__meta__.json`.

Writing goes to a temporary file in the same directory, is flushed to disk, then renamed over
the target: `os.replace` is atomic on POSIX, so a crash leaves either the old checkpoint or
the new one, never a torn file. Each zip member carries a CRC-32 that is checked on read, so
a truncated or corrupted file is reported, not half-loaded. A write killed before its rename
(SIGKILL, power loss) leaves a `<name>.<random>.tmp` beside the target, which `load` never
reads and `remove_stale_temporaries` deletes.

A checkpoint is treated as hostile until checked: no member may hold Python objects, every
member must be a numeric `.npy` array, and the arrays may not unpack to more than `MAX_BYTES`
(a few kilobytes of zip can claim gigabytes).
"""
from __future__ import annotations

import json
import math
import os
import pathlib
import secrets
import zipfile

import numpy as np
from numpy.lib import format as npformat

META_KEY = "__meta__.json"
FORMAT = "tinygrad_rnn.checkpoint/1"
TEMP_SUFFIX = ".tmp"
# far above any model this framework trains in reasonable time (H=1024, 2-layer LSTM with Adam
# is ~160 MB), far below what a zip bomb claims; load(max_bytes=...) raises it
MAX_BYTES = 4 << 30
NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex: never objects, strings or records


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the file and the problem."""


def save(path, arrays: dict, meta: dict) -> pathlib.Path:
    """Write `arrays` (name -> numeric numpy array) and `meta` (JSON-able) to `path` atomically.

    Raises CheckpointError if the file cannot be written (disk full, no permission); the
    previous checkpoint at `path`, if any, is then left as it was."""
    path = pathlib.Path(path)
    for name, arr in arrays.items():
        if name == META_KEY or not isinstance(arr, np.ndarray) or arr.dtype.kind not in NUMERIC_KINDS:
            raise CheckpointError(f"cannot save {name!r}: values must be numeric numpy arrays")
    doc = json.dumps({"format": FORMAT, **meta}, sort_keys=True).encode()
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # mode 0o666 minus the umask, as for any file the user creates (mkstemp would give 0o600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{META_KEY: np.frombuffer(doc, dtype=np.uint8)})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise CheckpointError(f"could not write checkpoint {str(path)!r}: {e}; the previous one, if any, "
                                  f"is unchanged") from e
        raise
    _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(path) -> list:
    """Delete the temporary files that killed writes of `path` left behind; returns their paths.

    Only call this while no other process writes the same checkpoint: its temporary file
    would go too."""
    path = pathlib.Path(path)
    stale = sorted(path.parent.glob(f"{path.name}.*{TEMP_SUFFIX}"))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


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


def _check_header(zf: zipfile.ZipFile, member: zipfile.ZipInfo, where: str) -> None:
    """Read one member's .npy header, never its data: refuse Python objects by name (np.load's
    allow_pickle=False refuses them too, this says why), and a shape that claims more bytes
    than the member holds, which np.load would allocate before finding the data missing."""
    with zf.open(member) as f:
        version = npformat.read_magic(f)
        read_header = {(1, 0): npformat.read_array_header_1_0, (2, 0): npformat.read_array_header_2_0}.get(version)
        if read_header is None:
            return  # a rarer header version: np.load's own checks judge it
        shape, _, dtype = read_header(f)
        start = f.tell()
    if dtype.hasobject:
        raise CheckpointError(f"{where}: member {member.filename!r} holds pickled Python objects; a checkpoint "
                              f"never does, and nothing in one is ever unpickled")
    claimed = start + math.prod(shape) * dtype.itemsize
    if claimed != member.file_size:
        raise CheckpointError(f"{where}: member {member.filename!r} claims shape {shape} of {dtype} "
                              f"({claimed:,} bytes with its header) but holds {member.file_size:,} bytes")


def load(path, max_bytes: int = MAX_BYTES) -> tuple[dict, dict]:
    """(arrays, meta). Raises CheckpointError for anything that is not an intact checkpoint."""
    path = pathlib.Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.is_file():
        raise CheckpointError(f"{where} does not exist" if not path.exists() else f"{where} is not a file")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
        unpacked = sum(m.file_size for m in members)
        if unpacked > max_bytes:
            raise CheckpointError(f"{where} would unpack to {unpacked:,} bytes, over the {max_bytes:,}-byte "
                                  f"limit; if you trust it, load it with max_bytes={unpacked}")
        strays = [m.filename for m in members if not m.filename.endswith(".npy")]
        if strays:
            raise CheckpointError(f"{where} holds member(s) that are not .npy arrays: {strays[:5]}")
        with zipfile.ZipFile(path) as zf:
            for member in members:
                _check_header(zf, member, where)
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, MemoryError) as e:
        raise CheckpointError(f"{where} is damaged or not a checkpoint: {e}") from e
    raw = arrays.pop(META_KEY, None)
    if raw is None:
        raise CheckpointError(f"{where} has no {META_KEY} entry")
    odd = [k for k, v in arrays.items() if v.dtype.kind not in NUMERIC_KINDS]
    if odd or raw.dtype != np.uint8:
        raise CheckpointError(f"{where} holds arrays that are not numeric: {odd or [META_KEY]}")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CheckpointError(f"{where} has unreadable metadata: {e}") from e
    if not isinstance(meta, dict) or meta.pop("format", None) != FORMAT:
        raise CheckpointError(f"{where} is not in format {FORMAT}")
    return arrays, meta
