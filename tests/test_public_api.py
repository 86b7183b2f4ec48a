"""Every public name is exercised by some test, and those no other test reached are tested here,
against PyTorch where it has the same name.

`TESTED_IN` says, for each public name (a module's names as tests/test_api_doc.py counts
them, for the modules in MODULES below, plus the attributes `Tensor`, `nn.Module` and
`optim.Optimizer` define), which test file exercises it. test_every_public_name_has_a_test
fails when a module gains a name the table does not list, so a new name forces a decision
about where it is tested, and when the named file does not mention the name at all (a check
of the table, not of the test: what the test asserts is for the reader of that file).
tinygrad_rnn.op_table is left out: its names are the table of cases tests/test_ops.py runs.
Known differences from PyTorch are strict xfails, so fixing one fails the run until the mark
goes.
"""
from __future__ import annotations

import os
import pathlib
import re

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import checkpoint, debug, nn, optim, viz
from tinygrad_rnn.models import CharRNN, charlm, load_model, sampling
from tinygrad_rnn.nn import init
from tinygrad_rnn.text import Vocab, tokenize_words

from test_api_doc import public_names

TESTS = pathlib.Path(__file__).resolve().parent
REQUIRE_TORCH = "TINYGRAD_RNN_REQUIRE_TORCH"


@pytest.fixture(scope="module")
def torch():
    """torch, or a skip; under TINYGRAD_RNN_REQUIRE_TORCH=1 (.ci/run sets it) a failure."""
    try:
        import torch
    except ImportError as e:
        if os.environ.get(REQUIRE_TORCH) == "1":
            pytest.fail(f"{REQUIRE_TORCH}=1 but torch cannot be imported ({e}); pip install -e '.[parity]'",
                        pytrace=False)
        pytest.skip(f"torch is not installed ({e})")
    return torch


# ----------------------------------------------------------------------------- Tensor
X = np.array([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, -1.0, 5.0]])  # ties in both rows


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("dim", [0, 1, -1, None])
@pytest.mark.parametrize("keepdim", [False, True])
def test_argmax_argmin_are_pytorchs_first_occurrence_indices(torch, name, dim, keepdim):
    ours = getattr(tg.Tensor(X), name)(dim, keepdim)
    theirs = getattr(torch.tensor(X), name)(dim, keepdim)
    assert ours.dtype == np.int64 and ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.data, theirs.numpy())
    assert not ours.requires_grad


@pytest.mark.parametrize("name", ["amax", "amin"])
@pytest.mark.parametrize("dim", [0, 1, (0, 1), None])
def test_amax_amin_values_and_gradients_without_ties_are_pytorchs(torch, name, dim):
    x = np.random.default_rng(0).standard_normal((3, 4))
    weights = np.random.default_rng(1).standard_normal(np.amax(x, axis=dim).shape)
    ours = tg.Tensor(x, requires_grad=True)
    theirs = torch.tensor(x, requires_grad=True)
    out_o = getattr(ours, name)(dim) if dim is not None else getattr(ours, name)()
    out_t = getattr(theirs, name)(dim) if dim is not None else getattr(theirs, name)()
    np.testing.assert_array_equal(out_o.data, out_t.detach().numpy())
    (out_o * tg.Tensor(weights)).sum().backward()
    (out_t * torch.tensor(weights)).sum().backward()
    np.testing.assert_array_equal(ours.grad.data, theirs.grad.numpy())


def test_amax_gives_a_tie_all_of_the_gradient_at_the_first_occurrence():
    # PyTorch's amax splits it between the tied elements; ours keeps max's rule (docs/api.md)
    x = tg.Tensor(X, requires_grad=True)
    x.amax(1, keepdim=True).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [[0, 1, 0, 0], [0, 0, 0, 1]])


def test_dim_is_the_number_of_dimensions():
    assert [tg.zeros(*s).dim() for s in [(), (3,), (2, 3, 4)]] == [0, 1, 3]


def test_a_hook_handle_removes_its_hook_and_works_as_a_context_manager():
    seen = []
    x = tg.Tensor([1.0, 2.0], requires_grad=True)
    handle = x.register_hook(lambda g: seen.append(g.data.copy()))
    assert isinstance(handle, tg.RemovableHandle)
    (x * 3).sum().backward()
    handle.remove()
    (x * 5).sum().backward()
    with x.register_hook(lambda g: g * 0):  # leaving the block removes the hook
        (x * 7).sum().backward()
    x.grad = None
    (x * 2).sum().backward()
    assert len(seen) == 1 and seen[0].tolist() == [3.0, 3.0]
    assert x.grad.data.tolist() == [2.0, 2.0]  # neither hook is left on x


def test_set_grad_enabled_as_a_context_manager_and_a_decorator():
    x = tg.Tensor([1.0], requires_grad=True)
    with tg.set_grad_enabled(False):
        assert not tg.is_grad_enabled() and not (x * 2).requires_grad
        with tg.set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not tg.is_grad_enabled()
    assert tg.is_grad_enabled()

    @tg.set_grad_enabled(False)
    def double(t):
        return t * 2

    assert not double(x).requires_grad and tg.is_grad_enabled()


def test_set_grad_enabled_called_as_a_function_switches_recording_like_pytorch():
    try:
        tg.set_grad_enabled(False)
        assert not tg.is_grad_enabled()
    finally:
        with tg.set_grad_enabled(True):
            pass
        tg.set_grad_enabled(True)


def test_a_tensors_name_labels_its_leaf_in_the_graph_picture():
    from tinygrad_rnn import viz

    w = tg.Tensor([[1.0, 2.0]], requires_grad=True, name="weight")
    y = (w * 3).sum()
    assert w.name == "weight" and y.name is None
    assert '"weight' in viz.to_dot(y)


# ----------------------------------------------------------------------------- nn.Module
def Net(lib):
    """The same small module built from our nn or from torch.nn."""
    class Net(lib.Module):
        def __init__(self):
            super().__init__()
            self.embed = lib.Embedding(6, 3)
            self.cells = lib.ModuleList([lib.RNNCell(3, 4), lib.Linear(4, 4)])
            self.head = self.cells[1]  # the same Linear under a second name

    return Net()


def _names(pairs):
    return [name for name, _ in pairs]


def test_named_modules_children_and_apply_visit_what_pytorch_visits(torch):
    ours, theirs = Net(nn), Net(torch.nn)
    assert _names(ours.named_modules()) == _names(theirs.named_modules())
    assert _names(ours.named_modules(remove_duplicate=False)) == _names(theirs.named_modules(remove_duplicate=False))
    assert _names(ours.named_children()) == _names(theirs.named_children())
    visited_o, visited_t = [], []
    assert ours.apply(lambda m: visited_o.append(type(m).__name__)) is ours
    theirs.apply(lambda m: visited_t.append(type(m).__name__))
    assert visited_o == visited_t  # children first, the module itself last


def test_a_module_without_forward_says_so_when_called():
    for call in (Net(nn), Net(nn).forward):
        with pytest.raises(NotImplementedError, match="Net has no forward"):
            call(tg.zeros(1))


def test_apply_initialises_every_linear_layer():
    net = Net(nn)
    net.apply(lambda m: init.ones_(m.weight) if isinstance(m, nn.Linear) else None)
    assert np.all(net.head.weight.data == 1) and not np.all(net.embed.weight.data == 1)


def test_register_parameter_and_add_module_register_like_attribute_assignment(torch):
    ours, theirs = nn.Module(), torch.nn.Module()
    for m, lib, data in [(ours, nn, np.ones(2)), (theirs, torch.nn, torch.ones(2))]:
        m.register_parameter("scale", lib.Parameter(data))
        m.add_module("proj", lib.Linear(2, 3))
    assert _names(ours.named_parameters()) == _names(theirs.named_parameters()) == ["scale", "proj.weight", "proj.bias"]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert _names(ours.named_children()) == ["proj"]


def test_repr_and_extra_repr_are_pytorchs(torch):
    pairs = [(nn.Linear(3, 4, bias=False), torch.nn.Linear(3, 4, bias=False)),
             (nn.Dropout(0.2), torch.nn.Dropout(0.2)), (nn.Embedding(10, 3), torch.nn.Embedding(10, 3)),
             (nn.GRU(3, 4, num_layers=2), torch.nn.GRU(3, 4, num_layers=2)), (Net(nn), Net(torch.nn))]
    for ours, theirs in pairs:
        assert ours.extra_repr() == theirs.extra_repr() and repr(ours) == repr(theirs)


@pytest.mark.parametrize("make", [lambda: nn.Linear(5, 3), lambda: nn.Embedding(7, 4)],
                         ids=["Linear", "Embedding"])
def test_reset_parameters_draws_again_as_the_constructor_did(make):
    tg.manual_seed(3)
    fresh = make()
    layer = make()
    for p in layer.parameters():
        p.data[...] = 0
    tg.manual_seed(3)
    layer.reset_parameters()
    for (k, a), (_, b) in zip(fresh.named_parameters(), layer.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=k)


def test_init_ones_fills_in_place_without_recording(torch):
    w = nn.Parameter(np.zeros((2, 3), np.float32))
    assert init.ones_(w) is w and w.grad_fn is None and w.requires_grad
    np.testing.assert_array_equal(w.data, torch.nn.init.ones_(torch.empty(2, 3)).numpy())


# ----------------------------------------------------------------------------- optimizers
def _quadratic(params, target):
    return sum(((p - t) ** 2).sum() for p, t in zip(params, target))


OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1)), ("RMSprop", dict(lr=0.01)),
              ("Adagrad", dict(lr=0.1))]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS, ids=[n for n, _ in OPTIMIZERS])
def test_step_with_a_closure_returns_its_loss_and_follows_pytorch(torch, name, kwargs):
    rng = np.random.default_rng(0)
    start, target = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    runs = []
    for lib, tensor in [(tg, lambda a, g: nn.Parameter(a.copy()) if g else tg.Tensor(a)),
                        (torch, lambda a, g: torch.tensor(a, requires_grad=g))]:
        params, tgt = [tensor(start, True)], [tensor(target, False)]
        opt = getattr(lib.optim, name)(params, **kwargs)

        def closure():
            opt.zero_grad()
            loss = _quadratic(params, tgt)
            loss.backward()
            return loss

        losses = [float(opt.step(closure).item()) for _ in range(5)]
        runs.append((losses, params[0].detach().numpy() if lib is torch else params[0].data))
    (ours_losses, ours_p), (their_losses, their_p) = runs
    np.testing.assert_allclose(ours_losses, their_losses, rtol=1e-12)
    np.testing.assert_allclose(ours_p, their_p, rtol=1e-12, atol=1e-14)
    assert ours_losses[-1] < ours_losses[0]


def test_closure_runs_with_recording_on_even_under_no_grad():
    p = nn.Parameter(np.array([2.0]))
    opt = optim.SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with tg.no_grad():
        assert opt.step(closure).item() == 4.0
    assert p.data.tolist() == [1.0]  # 2 - 0.25 * 2 * 2


def test_add_param_group_gives_a_group_its_own_hyperparameters_as_pytorch_does(torch):
    rng = np.random.default_rng(0)
    a0, b0, ga, gb = (rng.standard_normal(3) for _ in range(4))
    a, b = nn.Parameter(a0.copy()), nn.Parameter(b0.copy())
    ta, tb = torch.tensor(a0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    ours, theirs = optim.SGD([a], lr=0.1, momentum=0.5), torch.optim.SGD([ta], lr=0.1, momentum=0.5)
    ours.add_param_group({"params": b, "lr": 0.01})
    theirs.add_param_group({"params": tb, "lr": 0.01})
    assert isinstance(ours, optim.Optimizer)
    assert [(g["lr"], g["momentum"]) for g in ours.param_groups] == [(g["lr"], g["momentum"]) for g in theirs.param_groups]
    for _ in range(3):
        a.grad, b.grad = tg.Tensor(ga), tg.Tensor(gb)
        ta.grad, tb.grad = torch.tensor(ga), torch.tensor(gb)
        ours.step()
        theirs.step()
    np.testing.assert_allclose(a.data, ta.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(b.data, tb.detach().numpy(), rtol=1e-13)
    with pytest.raises(ValueError, match="more than one parameter group"):
        ours.add_param_group({"params": [a]})


@pytest.mark.parametrize("name, kwargs", [("StepLR", dict(step_size=3, gamma=0.5)), ("ExponentialLR", dict(gamma=0.8)),
                                          ("CosineAnnealingLR", dict(T_max=5, eta_min=0.1))])
def test_schedules_get_lr_follows_pytorchs_schedule(torch, name, kwargs):
    p, tp = nn.Parameter(np.zeros(1)), torch.zeros(1, requires_grad=True)
    ours = getattr(optim, name)(optim.SGD([p], lr=1.0), **kwargs)
    theirs = getattr(torch.optim.lr_scheduler, name)(torch.optim.SGD([tp], lr=1.0), **kwargs)
    lrs_o, lrs_t = [], []
    for _ in range(8):
        ours.optimizer.step()
        theirs.optimizer.step()
        ours.step()
        theirs.step()
        lrs_o.append(ours.get_last_lr())
        lrs_t.append(theirs.get_last_lr())
    # PyTorch updates the cosine recursively, we evaluate its closed form: equal to rounding
    np.testing.assert_allclose(lrs_o, lrs_t, rtol=1e-15 if name != "CosineAnnealingLR" else 1e-14)
    if name != "CosineAnnealingLR":
        assert ours.get_lr() == [g["lr"] * (kwargs["gamma"] if name == "ExponentialLR" else 1)
                                 for g in ours.optimizer.param_groups]  # the next epoch's, epoch 9 not a multiple of 3


def test_a_scheduler_subclass_only_writes_get_lr():
    class Halving(optim.LRScheduler):
        def get_lr(self):
            return [base * 0.5 ** self.last_epoch for base in self.base_lrs]

    opt = optim.Adam([nn.Parameter(np.zeros(1))], lr=0.8)
    sched = Halving(opt)
    seen = [opt.param_groups[0]["lr"]]
    for _ in range(3):
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == [0.8, 0.4, 0.2, 0.1]
    with pytest.raises(NotImplementedError):
        optim.LRScheduler(opt)


# ----------------------------------------------------------------------------- text, sampling
def test_tokenize_words_lowercases_and_splits_off_punctuation():
    assert tokenize_words("Hello, World! It's 3 o'clock--now.") == [
        "hello", ",", "world", "!", "it's", "3", "o'clock", "-", "-", "now", "."]


def test_split_tokens_follows_the_vocabulary_level():
    assert Vocab.from_text("ab ba").split_tokens("Ab !") == ["A", "b", " ", "!"]
    assert Vocab.from_text("ab ba", level="word").split_tokens("Ab !") == ["ab", "!"]


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_sampling_with_top_k_draws_only_among_the_k_most_likely(top_k):
    text = "abcdefgh" * 8
    vocab = Vocab.from_text(text)
    tg.manual_seed(0)
    model = CharRNN(len(vocab), hidden_size=8)
    out = sampling.sample(model, vocab, prime="a", length=40, top_k=top_k, seed=1)
    # replay the sample one token at a time: each drawn token must rank among the top k
    ranks = []
    with tg.no_grad():
        logits, state = model(vocab.encode("a")[None, :], None)
        for token in vocab.encode(out):
            row = logits.data[0, -1]
            ranks.append(int((row > row[token]).sum()))
            logits, state = model(np.array([[token]]), state)
    assert len(ranks) == 40 and max(ranks) < top_k
    if top_k > 1:  # it does draw below the top: not greedy decoding in disguise
        assert max(ranks) == top_k - 1


# ----------------------------------------------------------------------------- checkpoints, charlm
def test_remove_stale_temporaries_removes_only_killed_writes_of_that_file(tmp_path):
    target = tmp_path / "last.npz"
    checkpoint.save(target, {"w": np.arange(3.0)}, {"step": 1})
    stale = [tmp_path / f"last.npz.{tag}{checkpoint.TEMP_SUFFIX}" for tag in ("0a1b2c", "ffee00")]
    others = [tmp_path / f"best.npz.0a1b2c{checkpoint.TEMP_SUFFIX}", tmp_path / "last.npz.bak"]
    for p in stale + others:
        p.write_bytes(b"half a checkpoint")
    assert sorted(checkpoint.remove_stale_temporaries(target)) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.npz"] + [p.name for p in others])


@pytest.mark.parametrize("kind", list(checkpoint.NUMERIC_KINDS))
def test_every_numeric_kind_round_trips_and_nothing_else_is_saved(tmp_path, kind):
    dtype = {"b": bool, "i": np.int16, "u": np.uint8, "f": np.float32, "c": np.complex64}[kind]
    array = np.array([[0, 1], [1, 0]]).astype(dtype)
    arrays, _ = checkpoint.load(checkpoint.save(tmp_path / "a.npz", {"x": array}, {}))
    assert arrays["x"].dtype == array.dtype and np.array_equal(arrays["x"], array)
    with pytest.raises(checkpoint.CheckpointError, match="numeric"):
        checkpoint.save(tmp_path / "b.npz", {"x": array, "s": np.array(["text"])}, {})


def test_make_optimizer_and_check_config_as_the_trainer_uses_them():
    params = [nn.Parameter(np.zeros(2))]
    kinds = {name: type(charlm.make_optimizer(name, params, 0.5)) for name in ("sgd", "adagrad", "rmsprop", "adam")}
    assert kinds == {"sgd": optim.SGD, "adagrad": optim.Adagrad, "rmsprop": optim.RMSprop, "adam": optim.Adam}
    assert charlm.make_optimizer("adam", params, 0.5).param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="'adamw'"):
        charlm.make_optimizer("adamw", params, 0.5)
    cfg = charlm.TrainConfig(hidden=16, optimizer="sgd")
    assert charlm.check_config(cfg) is cfg
    with pytest.raises(ValueError, match="'hidden'"):
        charlm.check_config(charlm.TrainConfig(hidden="16"))


def test_save_checkpoint_writes_what_load_model_restores(tmp_path):
    vocab = Vocab.from_text("hello world")
    tg.manual_seed(0)
    model = CharRNN(len(vocab), hidden_size=4)
    opt = optim.Adam(model.parameters())
    cfg = charlm.TrainConfig(hidden=4, steps=7)
    charlm.save_checkpoint(tmp_path / "last.npz", model, opt, cfg, vocab, step=7, position=(0, 3), state=None,
                           history=[{"step": 7, "loss": 1.5, "grad_norm": 0.25}])
    loaded, loaded_vocab, meta = load_model(tmp_path / "last.npz")
    assert loaded_vocab.tokens == vocab.tokens and meta["step"] == 7 and meta["config"]["steps"] == 7
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_evaluate_scores_a_model_that_knows_nothing_at_the_vocabulary_size():
    vocab = Vocab.from_text("abcdefg")
    model = CharRNN(len(vocab), hidden_size=4)
    init.zeros_(model.head.weight)
    init.zeros_(model.head.bias)  # every logit 0: the uniform distribution over 7 tokens
    ids = np.random.default_rng(0).integers(0, len(vocab), 103)
    res = charlm.evaluate(model, ids, batch_size=4, seq_len=8)
    assert res["tokens"] == 4 * (102 // 4) and res["uniform_perplexity"] == 7
    assert res["perplexity"] == pytest.approx(7, rel=1e-6) and res["bits"] == pytest.approx(np.log2(7), rel=1e-6)


# ----------------------------------------------------------------------------- viz, debug
def _unrolled_loss(steps=3):
    tg.manual_seed(0)
    cell = nn.RNNCell(2, 3).double()
    h = tg.zeros(1, 3, dtype=np.float64)
    for x in np.random.default_rng(0).standard_normal((steps, 1, 2)):
        h = cell(tg.Tensor(x), h)
    return cell, h.sum()


def test_a_graph_counts_a_shared_weight_once_with_one_use_per_step():
    cell, loss = _unrolled_loss(steps=3)
    graph = viz.collect_graph(loss, params=cell)
    assert isinstance(graph, viz.Graph) and graph.count("leaf") == 4  # the cell's 4 parameters
    assert graph.uses("weight_hh") == 3 and graph.uses("weight_ih") == 3
    roots = [n for n in graph.nodes if n.is_root]
    assert len(roots) == 1 and isinstance(roots[0], viz.Node) and roots[0].shape == () and roots[0].grad_shape is None
    loss.backward()
    with pytest.raises(RuntimeError, match=re.escape(viz.GRAPH_FREED)):
        viz.collect_graph(loss)


def test_grad_shapes_are_recorded_when_the_graph_is_kept():
    cell, loss = _unrolled_loss(steps=2)
    loss.backward(retain_graph=True)
    shapes = {n.label: n.grad_shape for n in viz.collect_graph(loss, params=cell).nodes if n.kind == "leaf"}
    assert shapes == {"weight_ih": (3, 2), "weight_hh": (3, 3), "bias_ih": (3,), "bias_hh": (3,)}


def test_render_dot_runs_graphviz_or_says_there_is_none(tmp_path, monkeypatch):
    dot = tmp_path / "g.dot"
    dot.write_text("digraph { a -> b }", encoding="utf-8")
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    assert viz.render_dot(dot) is None
    assert "{" not in viz.GRAPHVIZ_HINT.format(dot=dot, svg=dot.with_suffix(".svg"))
    # a stand-in `dot` that writes what it was asked for where it was told to
    fake = tmp_path / "dot"
    fake.write_text('#!/bin/sh\necho "$1 $2" > "$4"\n', encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setattr(viz.shutil, "which", lambda name: str(fake))
    out = viz.render_dot(dot, "png")
    assert out == tmp_path / "g.png" and out.read_text().split() == ["-Tpng", str(dot)]


def test_hidden_activity_records_the_top_layer_per_token():
    vocab = Vocab.from_text("abcab ")
    tg.manual_seed(0)
    model = CharRNN(len(vocab), hidden_size=5, num_layers=2)
    act = viz.hidden_activity(model, vocab, "abcab")
    assert isinstance(act, viz.HiddenActivity) and act.states.shape == (5, 5) and act.text == "abcab"
    with tg.no_grad():
        hidden, _ = model.rnn(tg.nn.functional.one_hot(vocab.encode("abcab")[None, :], len(vocab), dtype=np.float32))
    np.testing.assert_allclose(act.states, hidden.data[0], rtol=1e-6)
    np.testing.assert_allclose(act.speed, np.abs(np.diff(act.states, axis=0)).mean(0), rtol=1e-6)
    assert np.all(np.diff(act.speed[act.order]) >= 0)  # slowest-changing first


def test_new_figure_is_a_matplotlib_figure_of_the_asked_size():
    fig = viz.new_figure(figsize=(4, 3))
    assert type(fig).__name__ == "Figure" and tuple(fig.get_size_inches()) == (4, 3)


def test_kernels_outside_any_op_are_profiled_under_no_op():
    p = nn.Parameter(np.ones(4, np.float32))
    p.grad = tg.Tensor(np.ones(4, np.float32))
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    with debug.profile() as prof:
        opt.step()  # the optimizer's update kernels run outside every op
    stats = prof.ops[debug.NO_OP]
    assert stats.kernel_calls >= 1 and stats.calls == 0 and stats.total_s == stats.kernel_s
    op_row = debug.OpStats(calls=2, forward_s=0.5, backward_calls=1, backward_s=0.25, kernel_calls=3, kernel_s=0.7)
    assert op_row.total_s == 0.75  # an op's kernels run inside its forward and backward: not counted twice


def test_check_gradients_reports_a_check_result_per_op():
    results = debug.check_gradients("exp", examples=2)
    assert [type(r) for r in results] == [debug.CheckResult] and results[0].name == "exp"
    assert results[0].passed and results[0].examples == 2 and results[0].max_abs < 1e-6


# ----------------------------------------------------------------------------- the table
MODULES = ["tinygrad_rnn", "tinygrad_rnn.nn", "tinygrad_rnn.nn.functional", "tinygrad_rnn.nn.init",
           "tinygrad_rnn.nn.utils", "tinygrad_rnn.optim", "tinygrad_rnn.text", "tinygrad_rnn.models.charlm",
           "tinygrad_rnn.checkpoint", "tinygrad_rnn.viz", "tinygrad_rnn.debug"]
CLASSES = {"Tensor": tg.Tensor, "Module": nn.Module, "Optimizer": optim.Optimizer}
ROOT = TESTS.parent
HERE = "tests/test_public_api.py"

# Where each public name is tested, by the file (from the repository root) whose tests use it.
# tinygrad_rnn/op_table.py is the table of ops tests/test_ops.py and tests/test_debug.py run:
# every op there is checked forwards and backwards on both backends.
TESTED_IN = {
    "tests/test_public_api.py": """
        Module.add_module Module.apply Module.extra_repr Module.forward Module.named_children
        Module.named_modules Module.register_parameter Optimizer.add_param_group Optimizer.step
        Tensor.amax Tensor.amin Tensor.argmax Tensor.argmin Tensor.dim Tensor.name
        Tensor.register_hook tinygrad_rnn.RemovableHandle tinygrad_rnn.checkpoint.NUMERIC_KINDS
        tinygrad_rnn.checkpoint.TEMP_SUFFIX tinygrad_rnn.checkpoint.remove_stale_temporaries
        tinygrad_rnn.debug.CheckResult tinygrad_rnn.debug.NO_OP tinygrad_rnn.debug.OpStats
        tinygrad_rnn.models.charlm.check_config tinygrad_rnn.models.charlm.evaluate
        tinygrad_rnn.models.charlm.make_optimizer tinygrad_rnn.models.charlm.save_checkpoint
        tinygrad_rnn.nn.init.ones_ tinygrad_rnn.optim.CosineAnnealingLR tinygrad_rnn.optim.ExponentialLR
        tinygrad_rnn.optim.LRScheduler
        tinygrad_rnn.optim.Optimizer tinygrad_rnn.optim.StepLR tinygrad_rnn.set_grad_enabled
        tinygrad_rnn.text.tokenize_words tinygrad_rnn.viz.GRAPHVIZ_HINT tinygrad_rnn.viz.GRAPH_FREED
        tinygrad_rnn.viz.Graph tinygrad_rnn.viz.HiddenActivity tinygrad_rnn.viz.Node
        tinygrad_rnn.viz.hidden_activity tinygrad_rnn.viz.new_figure tinygrad_rnn.viz.render_dot
    """,
    "tests/test_nn.py": """
        Module.children Module.eval Module.modules Module.named_parameters Module.to Module.train
        Module.zero_grad Optimizer.zero_grad Tensor.abs Tensor.clip Tensor.grad_fn Tensor.relu
        Tensor.std Tensor.to tinygrad_rnn.nn.CrossEntropyLoss tinygrad_rnn.nn.Dropout
        tinygrad_rnn.nn.Embedding tinygrad_rnn.nn.GRU tinygrad_rnn.nn.GRUCell tinygrad_rnn.nn.LSTM
        tinygrad_rnn.nn.LSTMCell tinygrad_rnn.nn.MSELoss tinygrad_rnn.nn.Module
        tinygrad_rnn.nn.ModuleList tinygrad_rnn.nn.NLLLoss tinygrad_rnn.nn.Parameter
        tinygrad_rnn.nn.RNN tinygrad_rnn.nn.functional.linear tinygrad_rnn.nn.functional.mse_loss
        tinygrad_rnn.nn.functional.nll_loss tinygrad_rnn.nn.functional.relu
        tinygrad_rnn.nn.init.constant_ tinygrad_rnn.nn.init.normal_ tinygrad_rnn.nn.init.orthogonal_
        tinygrad_rnn.nn.init.uniform_ tinygrad_rnn.nn.init.xavier_uniform_
        tinygrad_rnn.nn.utils.clip_grad_norm_ tinygrad_rnn.nn.utils.clip_grad_value_
        tinygrad_rnn.nn.utils.functional_call tinygrad_rnn.relu
    """,
    "tests/test_engine.py": """
        Module.double Module.float Module.load_state_dict Module.parameters Module.state_dict
        Optimizer.load_state_dict Optimizer.state_dict Tensor.T Tensor.backward Tensor.data
        Tensor.detach Tensor.double Tensor.dtype Tensor.float Tensor.grad Tensor.is_leaf Tensor.item
        Tensor.log Tensor.logsumexp Tensor.max Tensor.ndim Tensor.numel Tensor.numpy
        Tensor.requires_grad Tensor.requires_grad_ Tensor.retain_grad Tensor.shape Tensor.sigmoid
        Tensor.sqrt Tensor.sum Tensor.tanh Tensor.tolist Tensor.zero_ tinygrad_rnn.AnomalyError
        tinygrad_rnn.Function tinygrad_rnn.GradcheckError tinygrad_rnn.ShapeError
        tinygrad_rnn.Tensor tinygrad_rnn.arange tinygrad_rnn.detect_anomaly tinygrad_rnn.enable_grad
        tinygrad_rnn.eye tinygrad_rnn.float32 tinygrad_rnn.float64 tinygrad_rnn.full
        tinygrad_rnn.get_backend tinygrad_rnn.gradcheck tinygrad_rnn.int64
        tinygrad_rnn.is_anomaly_enabled tinygrad_rnn.is_grad_enabled tinygrad_rnn.manual_seed
        tinygrad_rnn.nn.Linear tinygrad_rnn.nn.RNNCell tinygrad_rnn.nn.functional.cross_entropy
        tinygrad_rnn.nn.functional.sigmoid tinygrad_rnn.nn.functional.tanh
        tinygrad_rnn.nn.init.zeros_ tinygrad_rnn.no_grad tinygrad_rnn.ones tinygrad_rnn.ones_like
        tinygrad_rnn.optim.SGD tinygrad_rnn.rand tinygrad_rnn.randn tinygrad_rnn.set_backend
        tinygrad_rnn.sigmoid tinygrad_rnn.sqrt tinygrad_rnn.stack tinygrad_rnn.tanh
        tinygrad_rnn.zeros tinygrad_rnn.zeros_like
    """,
    "tests/test_ops.py": """
        Tensor.add Tensor.astype Tensor.clamp Tensor.div Tensor.exp Tensor.expand Tensor.log_softmax
        Tensor.long Tensor.matmul Tensor.maximum Tensor.mean Tensor.min Tensor.minimum Tensor.mul
        Tensor.pow Tensor.reshape Tensor.softmax Tensor.split Tensor.sub Tensor.transpose
        tinygrad_rnn.cat tinygrad_rnn.clamp tinygrad_rnn.concatenate tinygrad_rnn.log_softmax
        tinygrad_rnn.matmul tinygrad_rnn.maximum tinygrad_rnn.minimum
        tinygrad_rnn.nn.functional.dropout tinygrad_rnn.nn.functional.embedding
        tinygrad_rnn.nn.functional.log_softmax tinygrad_rnn.nn.functional.one_hot
        tinygrad_rnn.nn.functional.softmax tinygrad_rnn.softmax tinygrad_rnn.tensor
        tinygrad_rnn.where
    """,
    "tests/fuzz_programs.py": """
        Tensor.broadcast_to Tensor.chunk Tensor.flatten Tensor.neg Tensor.permute Tensor.squeeze
        Tensor.unsqueeze Tensor.var Tensor.view tinygrad_rnn.exp tinygrad_rnn.log
    """,
    "tests/test_rnn.py": """
        Tensor.size tinygrad_rnn.optim.Adam
    """,
    "tests/test_checkpoint.py": """
        tinygrad_rnn.checkpoint.CheckpointError tinygrad_rnn.checkpoint.load
        tinygrad_rnn.checkpoint.save
    """,
    "tests/test_hostile_files.py": """
        tinygrad_rnn.checkpoint.FORMAT tinygrad_rnn.checkpoint.MAX_BYTES
        tinygrad_rnn.checkpoint.META_KEY
    """,
    "tests/test_debug.py": """
        tinygrad_rnn.debug.ENGINE tinygrad_rnn.debug.check_gradients
        tinygrad_rnn.debug.format_checks tinygrad_rnn.debug.profile tinygrad_rnn.models.charlm.CELLS
    """,
    "tests/test_charlm.py": """
        tinygrad_rnn.models.charlm.CharRNN tinygrad_rnn.models.charlm.TrainConfig
        tinygrad_rnn.models.charlm.TrainingDiverged tinygrad_rnn.models.charlm.beam_search
        tinygrad_rnn.models.charlm.blas_threads_for tinygrad_rnn.models.charlm.load_model
        tinygrad_rnn.models.charlm.sample tinygrad_rnn.models.charlm.train
    """,
    "tests/test_interrupts.py": """
        tinygrad_rnn.models.charlm.TrainingInterrupted
    """,
    "tests/test_memory.py": """
        tinygrad_rnn.models.charlm.detach_state
    """,
    "tests/test_optim.py": """
        tinygrad_rnn.optim.Adagrad tinygrad_rnn.optim.RMSprop
    """,
    "tests/test_text.py": """
        tinygrad_rnn.text.BatchStream tinygrad_rnn.text.CorpusError tinygrad_rnn.text.Vocab
        tinygrad_rnn.text.builtin_text tinygrad_rnn.text.download tinygrad_rnn.text.load_corpus
        tinygrad_rnn.text.read_text tinygrad_rnn.text.split
    """,
    "tests/test_viz.py": """
        tinygrad_rnn.viz.collect_graph tinygrad_rnn.viz.grad_norms_through_time
        tinygrad_rnn.viz.hidden_heatmap tinygrad_rnn.viz.power_norms
        tinygrad_rnn.viz.spectral_radius tinygrad_rnn.viz.to_dot tinygrad_rnn.viz.training_curve
        tinygrad_rnn.viz.unrolled_cell_loss tinygrad_rnn.viz.write_graph
    """,
}
TABLE_STARTS_HERE = None


def _listed() -> dict:
    out = {}
    for file, names in TESTED_IN.items():
        for name in names.split():
            assert name not in out, f"{name} listed under both {out[name]} and {file}"
            out[name] = file
    return out


def _public() -> set:
    names = {f"{m}.{n}" for m in MODULES for n in public_names(m)}
    for cls_name, cls in CLASSES.items():
        names |= {f"{cls_name}.{a}" for a in vars(cls) if not a.startswith("_")}
    names |= {"Tensor.name"}  # a slot, so not in vars(Tensor) under its own name
    return names


def mentions(source: str, name: str) -> bool:
    """A class attribute as `.attr` or as the string "attr" (getattr in a parametrized test);
    a module-level name as a whole word."""
    short = name.rsplit(".", 1)[-1]
    if name.split(".")[0] in CLASSES:
        return re.search(r"\." + re.escape(short) + r"(?!\w)|\"" + re.escape(short) + r"\"", source) is not None
    return re.search(r"(?<!\w)" + re.escape(short) + r"(?!\w)", source) is not None


def test_every_public_name_has_a_test():
    listed, public = _listed(), _public()
    unlisted = sorted(public - set(listed))
    assert not unlisted, f"public names with no test listed in TESTED_IN (add a test, then the name): {unlisted}"
    assert not sorted(set(listed) - public), f"TESTED_IN lists names that are not public: {sorted(set(listed) - public)}"
    source = {f: (ROOT / f).read_text(encoding="utf-8") for f in TESTED_IN}
    source[HERE] = source[HERE].split("TABLE_STARTS_HERE")[0]  # this file's tests, not the table
    missing = [f"{name} ({file})" for name, file in listed.items() if not mentions(source[file], name)]
    assert not missing, f"TESTED_IN names a file that never mentions the name: {missing}"
