"""No file may hurt the user: checkpoints crafted to run code, checkpoints that do not match the
run or the model, and corpora that are binary, huge, empty or not files at all each give a clear
error that names the problem, through the same paths a user takes (load_model, train --resume,
the CLI). Cases already pinned by test_checkpoint.py and test_text.py are not repeated here."""
import errno
import io
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from tinygrad_rnn import checkpoint, cli
from tinygrad_rnn.checkpoint import CheckpointError
from tinygrad_rnn.models import charlm
from tinygrad_rnn.text import CorpusError, builtin_text, corpora

TINY = dict(hidden=16, seq_len=8, batch_size=4, eval_every=3, seed=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(builtin_text()[:4000], encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """(arrays, meta) of a genuine checkpoint, to be tampered with."""
    out = tmp_path_factory.mktemp("trained")
    charlm.train(charlm.TrainConfig(corpus=corpus, out=str(out), steps=6, **TINY), log=lambda m: None)
    return checkpoint.load(out / "last.npz")


def _tampered(tmp_path, trained, arrays=None, meta=None) -> str:
    """A run directory whose last.npz is the trained checkpoint after `arrays(a)` / `meta(m)`
    edited copies of its parts."""
    a, m = {k: v.copy() for k, v in trained[0].items()}, json.loads(json.dumps(trained[1]))
    if arrays:
        arrays(a)
    if meta:
        meta(m)
    checkpoint.save(tmp_path / "run" / "last.npz", a, m)
    return str(tmp_path / "run")


def _main(capsys, *argv):
    """The CLI in this process: (exit code, stderr)."""
    code = cli.main(list(argv))
    return code, capsys.readouterr().err


def _resume(capsys, run_dir, *extra):
    return _main(capsys, "train", "--out", run_dir, "--resume", "--steps", "9", "--no-progress", *extra)


# ----------------------------------------------------------------------------- code on load
class _WritesMarker:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):  # unpickling this calls open(marker, "w"): creates the file
        return (open, (self.marker, "w"))


def test_a_pickled_payload_inside_a_real_checkpoint_never_runs(tmp_path, trained, capsys):
    marker = tmp_path / "pwned"
    run = _tampered(tmp_path, trained)
    path = f"{run}/last.npz"
    npy = io.BytesIO()
    np.save(npy, np.array([_WritesMarker(marker)], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as z:  # a genuine checkpoint plus one poisoned member
        z.writestr("model.head.weight_extra.npy", npy.getvalue())
    with np.load(path, allow_pickle=True) as z:  # the payload is live: trusting it would run it
        z["model.head.weight_extra"]
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="'model.head.weight_extra.npy' holds pickled Python objects"):
        charlm.load_model(path)
    for argv in (("sample", "--checkpoint", path), ("eval", "--checkpoint", path)):
        code, err = _main(capsys, *argv)
        assert code == 2 and "pickled" in err and path in err
    code, err = _resume(capsys, run)
    assert code == 2 and "pickled" in err
    assert not marker.exists()


@pytest.mark.parametrize("where,value,named", [
    ("config.cell", "os.system", "'cell'"),
    ("config.optimizer", "__import__('os').system('touch pwned')", "'optimizer'"),
    ("config.hidden", {"py/object": "os.system", "__class__": "subprocess.Popen"}, "'hidden'"),
    ("config.corpus", {"__reduce__": ["os.system", ["touch pwned"]]}, "'corpus'"),
    ("vocab.tokens", [{"py/function": "os.system"}, "a"], "string tokens"),
    ("vocab.unk", {"__class__": "builtins.eval"}, "'unk'"),
])
def test_json_that_names_a_class_or_callable_is_refused_naming_the_field(tmp_path, trained, monkeypatch, where,
                                                                         value, named):
    monkeypatch.chdir(tmp_path)  # where `touch pwned` would land

    def edit(m):
        part, key = where.split(".")
        m[part][key] = value

    run = _tampered(tmp_path, trained, meta=edit)
    with pytest.raises(CheckpointError, match=named):
        charlm.load_model(f"{run}/last.npz")
    with pytest.raises(CheckpointError, match=named):
        charlm.train(charlm.TrainConfig(out=run, resume=True, steps=9), log=lambda m: None)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("edit,named", [
    (lambda m: m["optimizer"]["param_groups"][0].update(lr={"py/function": "os.system"}), "'lr'"),
    (lambda m: m["optimizer"]["param_groups"][0].update(foreach="os.system"), "unknown hyper-parameter 'foreach'"),
    (lambda m: m["optimizer"]["state"]["0"]["step"].update(value="eval"), "'step'"),
    (lambda m: m["rng"].update(bit_generator="os.system"), "RNG state"),
    (lambda m: m.update(position=["os.system", 0]), "'position'"),
], ids=["lr", "unknown-key", "state-step", "rng", "position"])
def test_resume_state_that_is_not_numbers_is_refused_before_training(tmp_path, trained, edit, named):
    run = _tampered(tmp_path, trained, meta=edit)
    charlm.load_model(f"{run}/last.npz")  # the model itself is intact; only resuming needs these
    with pytest.raises(CheckpointError, match=named):
        charlm.train(charlm.TrainConfig(out=run, resume=True, steps=9), log=lambda m: None)


# ----------------------------------------------------------------------------- checkpoints that do not fit
@pytest.mark.parametrize("edit,named", [
    (lambda a: a.update({"model.rnn.weight_hh_l0": np.zeros((32, 16), np.float32)}),
     r"size mismatch for rnn.weight_hh_l0: copying a param with shape \(32, 16\)"),
    (lambda a: a.update({"model.head.weight": a["model.head.weight"][:-1]}), r"'model.head.weight' has shape"),
    (lambda a: a.pop("model.head.bias"), r'Missing key\(s\) in state_dict: "head.bias"'),
    (lambda a: a.pop("model.rnn.weight_hh_l0"), "no array 'model.rnn.weight_hh_l0'"),
    (lambda a: a.update({"model.head.bias": a["model.head.bias"].astype(np.float64)}), "dtype mismatch for head.bias"),
], ids=["shape", "head-rows", "missing-bias", "missing-weight", "dtype"])
def test_arrays_that_do_not_fit_the_model_name_the_array(tmp_path, trained, capsys, edit, named):
    run = _tampered(tmp_path, trained, arrays=edit)
    with pytest.raises(CheckpointError, match=named):
        charlm.load_model(f"{run}/last.npz")
    code, err = _resume(capsys, run)
    assert code == 2 and "last.npz" in err and "Traceback" not in err


@pytest.mark.parametrize("edit,named", [
    (lambda m: m.pop("vocab"), r"lacks \['vocab'\]"),
    (lambda m: m["config"].pop("hidden"), r"lacks field\(s\) \['hidden'\]"),
    (lambda m: m["config"].update(shell="rm -rf /"), r"unknown field\(s\) \['shell'\]"),
    (lambda m: m["vocab"].update(tokens=m["vocab"]["tokens"][:-1]), r"'model.head.weight' has shape"),
    (lambda m: m["vocab"].update(tokens=["a", "a"]), "unique"),
    (lambda m: m["config"].update(layers=0), "'layers' is 0, expected at least 1"),
    (lambda m: m["config"].update(hidden=True), "'hidden' is True"),
], ids=["no-vocab", "no-hidden", "unknown-field", "vocab-shorter", "vocab-duplicate", "layers-0", "hidden-bool"])
def test_metadata_that_is_missing_or_inconsistent_is_named(tmp_path, trained, edit, named):
    run = _tampered(tmp_path, trained, meta=edit)
    with pytest.raises(CheckpointError, match=named):
        charlm.load_model(f"{run}/last.npz")


def test_a_config_claiming_a_huge_model_is_refused_before_allocating_it(tmp_path, trained):
    run = _tampered(tmp_path, trained, meta=lambda m: m["config"].update(hidden=200_000))
    t0 = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"hidden=200000"):
        charlm.load_model(f"{run}/last.npz")  # 4 * 200,000^2 floats would be 640 GB
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("missing", ["step", "rng", "optimizer", "history", "position"])
def test_resume_needs_every_part_of_the_run_and_names_the_missing_one(tmp_path, trained, missing):
    run = _tampered(tmp_path, trained, meta=lambda m: m.pop(missing))
    with pytest.raises(CheckpointError, match=f"lacks \\['{missing}'\\]"):
        charlm.train(charlm.TrainConfig(out=run, resume=True, steps=9), log=lambda m: None)


def test_resume_with_a_corpus_of_another_vocabulary_is_refused_naming_the_difference(tmp_path, trained, capsys):
    run = _tampered(tmp_path, trained)
    other = tmp_path / "other.txt"
    other.write_text(builtin_text()[:4000].replace("q", "Ω") + "€", encoding="utf-8")
    code, err = _resume(capsys, run, "--corpus", str(other))
    assert code == 2 and "different vocabulary" in err
    assert "new here: 'Ω', '€'" in err and "absent here: 'q'" in err
    assert charlm.load_model(f"{run}/last.npz")[2]["step"] == 6  # the checkpoint is untouched


def test_resume_with_a_different_architecture_or_data_setting_is_refused_naming_it(tmp_path, trained, capsys):
    run = _tampered(tmp_path, trained)
    code, err = _resume(capsys, run, "--hidden", "64")
    assert code == 2 and "hidden=64 (the checkpoint has 16)" in err
    code, err = _resume(capsys, run, "--cell", "lstm", "--batch-size", "8")
    assert code == 2 and "batch_size=8 (the checkpoint has 4)" in err and "cell='lstm'" in err
    code, _ = _resume(capsys, run, "--eval-every", "2")  # how often to report is not part of the run
    assert code == 0
    # typed options count even when they equal the defaults (256, "rnn")
    code, err = _resume(capsys, run, "--hidden", "256", "--cell", "rnn")
    assert code == 2 and "hidden=256 (the checkpoint has 16)" in err and "cell" not in err.split("asked for:")[1]


def test_resume_on_edited_text_with_the_same_vocabulary_says_so(tmp_path, trained, corpus):
    run = _tampered(tmp_path, trained)
    edited = tmp_path / "edited.txt"
    text = open(corpus, encoding="utf-8").read()
    edited.write_text(text[len(text) // 2:] + text[: len(text) // 2], encoding="utf-8")  # same characters
    logs = []
    charlm.train(charlm.TrainConfig(corpus=str(edited), out=run, resume=True, steps=9), log=logs.append)
    assert any("not the text the checkpoint was trained on" in m for m in logs), logs


# ----------------------------------------------------------------------------- files that are not checkpoints
def test_files_that_are_not_checkpoints(tmp_path):
    np.save(tmp_path / "plain.npy", np.ones(3))
    (tmp_path / "plain.npz").write_bytes((tmp_path / "plain.npy").read_bytes())  # .npy under a .npz name
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        checkpoint.load(tmp_path / "plain.npz")
    with pytest.raises(CheckpointError, match="is not a file"):
        checkpoint.load(tmp_path)
    with pytest.raises(CheckpointError, match="missing.npz' does not exist"):
        charlm.load_model(tmp_path / "missing.npz")
    raw_meta = tmp_path / "raw.npz"
    with zipfile.ZipFile(raw_meta, "w") as z:  # the JSON as a bare member, not a .npy array
        z.writestr("__meta__.json", json.dumps({"format": checkpoint.FORMAT}))
    with pytest.raises(CheckpointError, match=r"not \.npy arrays: \['__meta__.json'\]"):
        checkpoint.load(raw_meta)
    strings = tmp_path / "strings.npz"
    np.savez(strings, w=np.array(["os.system"]), **{checkpoint.META_KEY: np.frombuffer(b"{}", np.uint8)})
    with pytest.raises(CheckpointError, match=r"not numeric: \['w'\]"):
        checkpoint.load(strings)
    deep = tmp_path / "deep.npz"
    doc = ("[" * 100_000 + "]" * 100_000).encode()
    np.savez(deep, **{checkpoint.META_KEY: np.frombuffer(doc, np.uint8)})
    with pytest.raises(CheckpointError, match="unreadable metadata"):
        checkpoint.load(deep)


def test_a_zip_bomb_is_refused_before_unpacking(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, w=np.zeros(2_000_000), **{checkpoint.META_KEY: np.frombuffer(b"{}", np.uint8)})
    assert path.stat().st_size < 100_000  # 16 MB of zeros in a few kilobytes
    with pytest.raises(CheckpointError, match="would unpack to 16,000,.* over the 1,000,000-byte limit"):
        checkpoint.load(path, max_bytes=1_000_000)


def test_a_header_claiming_a_vast_array_is_an_error_not_an_allocation(tmp_path):
    npy = io.BytesIO()
    np.save(npy, np.ones(2))
    lie = npy.getvalue().replace(b"(2,)", b"(10000000000000,)")  # 80 TB claimed, 16 bytes present
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("w.npy", lie)
        z.writestr(checkpoint.META_KEY + ".npy", pickle.dumps(None))
    with pytest.raises(CheckpointError, match=r"'w.npy' claims shape \(10000000000000,\) of float64 .* but holds"):
        checkpoint.load(path)


def test_a_failed_write_is_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = checkpoint.save(tmp_path / "c.npz", {"w": np.ones(3)}, {"step": 1})
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous one, if any, is unchanged"):
        checkpoint.save(path, {"w": np.zeros(3)}, {"step": 2})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_an_out_path_that_is_a_file_is_refused_before_training(tmp_path, corpus, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("not a directory")
    code, err = _main(capsys, "train", "--corpus", corpus, "--out", str(blocker), "--steps", "3", "--no-progress")
    assert code == 2 and "is not a directory" in err and blocker.read_text() == "not a directory"


def test_resume_without_a_checkpoint_or_without_out_says_what_is_missing(tmp_path, capsys):
    code, err = _main(capsys, "train", "--out", str(tmp_path / "empty"), "--resume", "--no-progress")
    assert code == 2 and f"--resume: no checkpoint at {tmp_path / 'empty' / 'last.npz'}" in err
    code, err = _main(capsys, "train", "--resume", "--no-progress")
    assert code == 2 and "--resume needs --out" in err


@pytest.mark.parametrize("option,value,says", [("--hidden", "0", "'hidden' is 0, expected at least 1"),
                                               ("--dropout", "1.5", "'dropout' and 'val_frac' must be in [0, 1)"),
                                               ("--lr", "nan", "'lr' is nan, expected at least 0")])
def test_options_no_run_could_use_are_refused_before_training(corpus, tmp_path, capsys, option, value, says):
    code, err = _main(capsys, "train", "--corpus", corpus, option, value, "--steps", "3", "--no-progress")
    assert code == 2 and says in err


# ----------------------------------------------------------------------------- corpora
def test_binary_corpora_are_refused_wherever_the_binary_part_is(tmp_path, capsys):
    late_nul = tmp_path / "late_nul.txt"
    late_nul.write_bytes(b"plain text\n" * 20_000 + b"\x00tail")  # past the first 64 KiB
    with pytest.raises(CorpusError, match=r"NUL byte \(at offset 220000\)"):
        corpora.read_text(late_nul)
    noise = tmp_path / "noise.bin"
    noise.write_bytes(np.random.default_rng(0).integers(1, 256, 5000, dtype=np.uint8).tobytes())  # no NUL
    with pytest.raises(CorpusError, match=r"not UTF-8 and 1\d% of its first bytes are control characters: it looks binary"):
        corpora.read_text(noise)
    for path, says in ((late_nul, "binary"), (noise, "binary")):
        code, err = _main(capsys, "train", "--corpus", str(path), "--steps", "3", "--no-progress")
        assert code == 2 and says in err and str(path) in err


def test_a_sparse_file_over_the_cap_is_refused_without_reading_it(tmp_path, capsys):
    big = tmp_path / "huge.txt"
    with open(big, "wb") as f:
        f.truncate(corpora.MAX_BYTES + 1)  # a hole: 1 GiB long, no disk used
    assert big.stat().st_blocks == 0
    t0 = time.perf_counter()
    code, err = _main(capsys, "train", "--corpus", str(big), "--steps", "3", "--no-progress")
    assert code == 2 and "is 1,073,741,825 bytes, over the 1,073,741,824-byte limit" in err
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize("make,says", [
    (lambda p: p.write_bytes(b""), "is empty"),
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("tiny text"), "too short for batch_size 4 x seq_len 8"),
], ids=["empty", "directory", "missing", "shorter-than-a-batch"])
def test_unusable_corpus_paths_give_a_clear_cli_error(tmp_path, capsys, make, says):
    path = tmp_path / "corpus.txt"
    make(path)
    code, err = _main(capsys, "train", "--corpus", str(path), "--steps", "3", "--batch-size", "4", "--seq-len", "8",
                      "--no-progress")
    assert code == 2 and says in err and "Traceback" not in err


def test_devices_and_pipes_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)  # opening it to read would wait forever for a writer
    script = ("import sys\nfrom tinygrad_rnn.text import read_text\nfor p in sys.argv[1:]:\n"
              "    try: read_text(p)\n    except ValueError as e: print(e)\n")
    r = subprocess.run([sys.executable, "-c", script, str(fifo), "/dev/zero"], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.count("is not a regular file") == 2, r.stdout + r.stderr


def test_a_validation_split_too_small_to_measure_is_reported(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text(builtin_text()[:400], encoding="utf-8")
    logs = []
    res = charlm.train(charlm.TrainConfig(corpus=str(path), steps=2, val_frac=0.001, **TINY), log=logs.append)
    assert res["val"] is None and any("validation split has 0 token(s)" in m for m in logs), logs
