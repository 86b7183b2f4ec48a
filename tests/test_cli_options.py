"""Valid uses of `tinygrad-rnn` options that no other test covered, each checked for its effect
(not just an exit code 0): the optimizers' first updates against their formulas, the clipping
options against the gradient they clip, the budget and logging options against what the run
did, the model options against the checkpoint's arrays, and the eval/sample options against
the results they must equal.

The runs are tiny (hidden 8, batches of 4 x 8) and called in this process through
`cli.main(argv)`, the function the `tinygrad-rnn` script calls, to spare an interpreter start
per run. Bad values are tested elsewhere (tests/test_hostile_files.py and the trainer tests).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import cli
from tinygrad_rnn.models import charlm, load_model
from tinygrad_rnn.text import BatchStream, Vocab, builtin_text, split

TINY = ["--hidden", "8", "--seq-len", "8", "--batch-size", "4", "--eval-every", "0", "--no-progress"]
LR = 0.01
# w1 - w0 of float32 weights (|w| < 0.5 here) is exact to half a float32 step of w: 2**-25
ROUNDING = 2.0 ** -25


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(builtin_text()[:3_000], encoding="utf-8")
    return path


def train(capsys, corpus, out, *options) -> tuple[dict, str]:
    """(the --json summary, what the run logged on stderr)"""
    code = cli.main(["train", "--corpus", str(corpus), "--out", str(out), *TINY, "--json", *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out.strip().splitlines()[-1]), captured.err


def first_update(capsys, corpus, out, *options, lr=LR) -> tuple[dict, dict]:
    """One step from the seeded initial weights: ({name: w1 - w0}, the checkpoint's arrays)."""
    train(capsys, corpus, out, "--steps", "1", "--lr", str(lr), "--clip-norm", "0", *options)
    model, vocab, _ = load_model(out / "last.npz")
    tg.manual_seed(0)  # the trainer seeds with --seed (0) right before building the model
    start = charlm.CharRNN(len(vocab), 8).state_dict()
    with np.load(out / "last.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return {k: v.astype(np.float64) - start[k] for k, v in model.state_dict().items()}, arrays


def _grads(arrays, names) -> dict:
    return {k: arrays[f"optim.{i}.exp_avg"].astype(np.float64) / (1 - 0.9) for i, k in enumerate(names)}


def test_each_optimizer_makes_its_own_first_update(capsys, corpus, tmp_path):
    delta, arrays = first_update(capsys, corpus, tmp_path / "adam", "--optimizer", "adam")
    g = _grads(arrays, delta)
    # Adam's first step, bias-corrected: m_hat = g, v_hat = g^2, so the update is -lr g / (|g| + eps)
    expected = {"adam": lambda g: -LR * g / (np.abs(g) + 1e-8),
                "sgd": lambda g: -LR * g,
                "adagrad": lambda g: -LR * g / (np.sqrt(g * g) + 1e-10),  # sum = g^2
                "rmsprop": lambda g: -LR * g / (np.sqrt(0.01 * g * g) + 1e-8)}  # square_avg = (1 - 0.99) g^2
    buffers = {"adam": {"exp_avg", "exp_avg_sq"}, "sgd": set(), "adagrad": {"sum"}, "rmsprop": {"square_avg"}}
    for name, rule in expected.items():
        if name != "adam":
            delta, arrays = first_update(capsys, corpus, tmp_path / name, "--optimizer", name)
        assert {k.split(".")[2] for k in arrays if k.startswith("optim.")} == buffers[name], name
        for k, d in delta.items():  # rtol: g is read off a float32 moment
            np.testing.assert_allclose(d, rule(g[k]), rtol=1e-5, atol=ROUNDING, err_msg=f"{name} {k}")
        assert max(np.abs(d).max() for d in delta.values()) > 1e-4, name  # it moved


def test_clip_value_clips_every_gradient_element_and_clip_norm_the_whole_norm(capsys, corpus, tmp_path):
    delta, arrays = first_update(capsys, corpus, tmp_path / "adam", "--optimizer", "adam")
    g = _grads(arrays, delta)
    c = 1e-3
    assert max(np.abs(v).max() for v in g.values()) > 10 * c  # so the clipping has work to do
    # lr 1: updates of up to c = 1e-3, far above the rounding of w
    delta, _ = first_update(capsys, corpus, tmp_path / "value", "--optimizer", "sgd", "--clip-value", str(c), lr=1.0)
    for k, d in delta.items():
        np.testing.assert_allclose(d, -np.clip(g[k], -c, c), rtol=1e-5, atol=ROUNDING, err_msg=k)
    norm = math.sqrt(sum((v * v).sum() for v in g.values()))
    delta, _ = first_update(capsys, corpus, tmp_path / "norm", "--optimizer", "sgd", "--clip-norm", str(c), lr=1.0)
    for k, d in delta.items():
        np.testing.assert_allclose(d, -g[k] * (c / norm), rtol=1e-5, atol=ROUNDING, err_msg=k)


def test_epochs_sets_the_number_of_steps_from_the_batches_per_epoch(capsys, corpus, tmp_path):
    vocab = Vocab.from_text(corpus.read_text(encoding="utf-8"))
    train_ids = split(vocab.encode(corpus.read_text(encoding="utf-8")), 0.1)[0]
    per_epoch = BatchStream(train_ids, 4, 8, "sequential", 0).batches_per_epoch
    summary, _ = train(capsys, corpus, tmp_path / "e1", "--epochs", "1")
    assert summary["steps"] == per_epoch
    summary, _ = train(capsys, corpus, tmp_path / "e", "--epochs", "1.5")
    assert summary["steps"] == math.ceil(1.5 * per_epoch)


def test_sample_every_logs_a_sample_every_n_steps(capsys, corpus, tmp_path):
    code = cli.main(["train", "--corpus", str(corpus), "--out", str(tmp_path / "run"), *TINY, "--steps", "6",
                     "--sample-every", "2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    samples = [line for line in captured.err.splitlines() if line.startswith("sample: ")]
    assert len(samples) == 3  # after steps 2, 4 and 6
    assert all(len(json.loads(line[len("sample: "):])) == 200 for line in samples)  # TrainConfig.sample_len


def test_model_options_shape_the_checkpointed_model_as_pytorch_would(capsys, corpus, tmp_path):
    train(capsys, corpus, tmp_path / "run", "--steps", "2", "--cell", "gru", "--layers", "2",
          "--embedding", "5", "--dropout", "0.5")
    model, vocab, _ = load_model(tmp_path / "run" / "last.npz")
    arrays = model.state_dict()
    assert arrays["embed.weight"].shape == (len(vocab), 5)
    # torch.nn.GRU(5, 8, num_layers=2)'s names and shapes: three gates (r, z, n) of 8 units
    # stacked, layer 0 reading the 5-wide embedding, layer 1 layer 0's 8-wide output
    reference = {}
    for layer, width in ((0, 5), (1, 8)):
        reference.update({f"rnn.weight_ih_l{layer}": (24, width), f"rnn.weight_hh_l{layer}": (24, 8),
                          f"rnn.bias_ih_l{layer}": (24,), f"rnn.bias_hh_l{layer}": (24,)})
    assert {k: v.shape for k, v in arrays.items() if k.startswith("rnn.")} == reference
    assert model.drop.p == 0.5


def test_random_sampling_trains_on_other_batches_than_sequential(capsys, corpus, tmp_path):
    losses = {}
    for mode in ("sequential", "random"):
        train(capsys, corpus, tmp_path / mode, "--steps", "3", "--sampling", mode)
        losses[mode] = [r["loss"] for r in load_model(tmp_path / mode / "last.npz")[2]["history"]]
    assert len(losses["random"]) == 3 and losses["random"] != losses["sequential"]


def test_val_frac_and_eval_corpus_choose_the_text_eval_scores(capsys, corpus, tmp_path):
    train(capsys, corpus, tmp_path / "run", "--steps", "2", "--val-frac", "0.25")
    ckpt = str(tmp_path / "run" / "last.npz")
    text = corpus.read_text(encoding="utf-8")
    val_ids = split(Vocab.from_text(text).encode(text), 0.25)[1]

    def evaluate(*options):
        code = cli.main(["eval", "--checkpoint", ckpt, "--json", *options])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return json.loads(captured.out)

    def scored(n):  # evaluate() reads n tokens as 4 streams (--batch-size), each predicting all but one
        return 4 * ((n - 1) // 4)

    default = evaluate()
    assert default["tokens"] == scored(len(val_ids)) and len(val_ids) == int(0.25 * len(text))
    held_out = tmp_path / "held_out.txt"
    held_out.write_text(text[-len(val_ids):], encoding="utf-8")  # the validation split as a file
    assert evaluate("--corpus", str(held_out)) == default
    other = tmp_path / "other.txt"
    other.write_text(text[:500], encoding="utf-8")
    assert evaluate("--corpus", str(other))["tokens"] == scored(500)


def test_top_k_one_samples_what_greedy_decoding_gives(capsys, corpus, tmp_path):
    train(capsys, corpus, tmp_path / "run", "--steps", "3")
    ckpt = str(tmp_path / "run" / "last.npz")

    def sample(*options):
        code = cli.main(["sample", "--checkpoint", ckpt, "--prime", "The", "--length", "40", *options])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return captured.out

    greedy = sample("--temperature", "0")
    assert sample("--top-k", "1", "--seed", "5") == greedy == sample("--top-k", "1", "--seed", "6")
    assert sample("--seed", "5") != greedy  # at temperature 1 without top-k it does draw
