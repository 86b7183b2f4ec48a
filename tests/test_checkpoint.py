"""Checkpoint files: round trip, atomic replacement, and clear errors for damaged or hostile files."""
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from tinygrad_rnn import checkpoint
from tinygrad_rnn.checkpoint import CheckpointError


def _example():
    rng = np.random.default_rng(0)
    return {"rnn.weight_hh": rng.standard_normal((4, 4)).astype(np.float32),
            "step": np.array(7)}, {"config": {"hidden": 4}, "vocab": ["a", "é"]}


def test_round_trip(tmp_path):
    arrays, meta = _example()
    checkpoint.save(tmp_path / "c.npz", arrays, meta)
    got_arrays, got_meta = checkpoint.load(tmp_path / "c.npz")
    assert got_meta == meta and got_arrays.keys() == arrays.keys()
    for k in arrays:
        np.testing.assert_array_equal(got_arrays[k], arrays[k])
        assert got_arrays[k].dtype == arrays[k].dtype
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary left behind


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    arrays, meta = _example()
    path = checkpoint.save(tmp_path / "c.npz", arrays, meta)
    before = path.read_bytes()

    def crash(*a, **k):
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of writing

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(path, arrays, {"config": "new"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


@pytest.mark.parametrize("cut", [0, 10, 200, -30])
def test_truncated_file_is_a_clear_error(tmp_path, cut):
    arrays, meta = _example()
    path = checkpoint.save(tmp_path / "c.npz", arrays, meta)
    data = path.read_bytes()
    path.write_bytes(data[:cut] if cut >= 0 else data[:len(data) + cut])
    with pytest.raises(CheckpointError, match="c.npz"):
        checkpoint.load(path)


def test_flipped_byte_is_detected(tmp_path):
    arrays, meta = _example()
    path = checkpoint.save(tmp_path / "c.npz", {"w": np.zeros(10_000)}, meta)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the array payload: the member CRC no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_payload_is_never_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        obj = np.array([_Boom()], dtype=object)
        npy = io.BytesIO()
        np.save(npy, obj, allow_pickle=True)
        z.writestr("w.npy", npy.getvalue())
        z.writestr("__meta__.json.npy", pickle.dumps(_Boom()))
    (tmp_path / "evil.npz").write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "evil.npz")
    assert not (tmp_path / "pwned").exists()


def test_object_arrays_are_refused_on_save(tmp_path):
    with pytest.raises(CheckpointError, match="numeric"):
        checkpoint.save(tmp_path / "c.npz", {"w": np.array([object()])}, {})


def test_foreign_npz_is_refused(tmp_path):
    np.savez(tmp_path / "plain.npz", w=np.ones(3))
    with pytest.raises(CheckpointError, match="__meta__"):
        checkpoint.load(tmp_path / "plain.npz")
