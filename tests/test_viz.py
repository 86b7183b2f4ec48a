"""viz: the graph as DOT (structure, shared weights once, no recursion), gradient norms through
time against a hand-written numpy BPTT, spectral facts, and the char-RNN hidden-unit heat map."""
import re
import shutil

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import Tensor, cli, nn, viz
from tinygrad_rnn.models import charlm
from tinygrad_rnn.text import builtin_text


def f64(a, requires_grad=True, name=None):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad, name=name)


def dot_nodes(dot: str) -> list:
    return re.findall(r"^  (n\d+) \[label=\"([^\"]*)\"", dot, flags=re.M)


def dot_edges(dot: str) -> list:
    return re.findall(r"^  (n\d+) -> (n\d+);$", dot, flags=re.M)


# ----------------------------------------------------------------------------- the graph
def test_known_tiny_graph_has_exact_nodes_and_edges():
    a, b = f64([[1.0, 2.0]], name="a"), f64([[3.0, 4.0]], name="b")
    out = (a * b + a).sum()
    dot = viz.to_dot(out)
    nodes = dict(dot_nodes(dot))
    labels = sorted(label.split("\\n")[0] for label in nodes.values())
    assert labels == ["Add", "Mul", "Sum", "a", "b"]
    edges = dot_edges(dot)
    assert len(edges) == 5  # a->Mul, b->Mul, Mul->Add, a->Add, Add->Sum
    by_label = {label.split("\\n")[0]: nid for nid, label in nodes.items()}
    assert sorted(dst for src, dst in edges if src == by_label["a"]) == sorted([by_label["Mul"], by_label["Add"]])
    assert (by_label["Add"], by_label["Sum"]) in edges
    assert nodes[by_label["Mul"]] == "Mul\\n(1, 2)" and nodes[by_label["Sum"]] == "Sum\\n()"
    assert dot.startswith("digraph") and dot.rstrip().endswith("}")


def test_a_tensor_used_twice_by_one_op_draws_two_edges():
    a = f64([1.0, 2.0], name="a")
    g = viz.collect_graph((a + a).sum())
    assert g.count("op") == 2 and g.count("leaf") == 1
    assert g.uses("a") == 2 and len(g.edges) == 3


def test_names_come_from_named_parameters_and_constants_are_marked():
    lin = nn.Linear(3, 2)
    x = Tensor(np.ones((4, 3), np.float32))  # no grad: drawn as a constant
    g = viz.collect_graph(lin(x).sum(), lin)
    leaves = sorted((n.label, n.shape) for n in g.nodes if n.kind == "leaf")
    assert leaves == [("bias", (2,)), ("weight", (2, 3))]
    assert [(n.label, n.shape) for n in g.nodes if n.kind == "const"] == [("const", (4, 3))]
    # the same names from a dict or from the pairs named_parameters() yields
    for params in (dict(lin.named_parameters()), lin.named_parameters()):
        assert sorted(n.label for n in viz.collect_graph(lin(x).sum(), params).nodes if n.kind == "leaf") \
            == ["bias", "weight"]


def elementary_rnn_loss(steps):
    """h = tanh(x W + h U + b) from elementary ops, so the structure is known exactly."""
    rng = np.random.default_rng(0)
    W, U, b = f64(rng.standard_normal((2, 3)), name="W"), f64(rng.standard_normal((3, 3)), name="U"), \
        f64(np.zeros(3), name="b")
    h = Tensor(np.zeros((1, 3)))
    for _ in range(steps):
        h = (Tensor(rng.standard_normal((1, 2))) @ W + h @ U + b).tanh()
    return h.sum()


def test_unrolled_elementary_rnn_shares_each_weight_in_one_node():
    for steps in (1, 3, 5):
        g = viz.collect_graph(elementary_rnn_loss(steps))
        assert [n.label for n in g.nodes if n.kind == "leaf"].count("U") == 1
        assert g.uses("W") == steps and g.uses("U") == steps and g.uses("b") == steps
        # per step: 2 MatMul, 2 Add, 1 Tanh; plus the final Sum
        assert g.count("op") == 5 * steps + 1
        assert g.count("const") == steps + 1  # every x_t, and the zero h0
        assert len(g.edges) == 9 * steps + 1  # 2 per MatMul and Add, 1 per Tanh; Sum's


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_unrolled_cell_graph_grows_linearly_and_keeps_weights_shared(cell):
    # holds whether a step is many elementary ops or one fused node
    counts = []
    for steps in (2, 3, 4):
        loss, params = viz.unrolled_cell_loss(steps, cell)
        g = viz.collect_graph(loss, params)
        leaves = sorted(n.label for n in g.nodes if n.kind == "leaf")
        assert leaves == sorted(params), leaves  # every parameter once, however many steps
        for name in ("weight_ih", "weight_hh", "head.weight"):
            assert g.uses(name) == steps
        counts.append((g.count("op"), len(g.edges)))
    assert counts[1][0] - counts[0][0] == counts[2][0] - counts[1][0] > 0
    assert counts[1][1] - counts[0][1] == counts[2][1] - counts[1][1] > 0


def test_long_chain_is_walked_without_recursion():
    x = f64([1.0], name="x")
    y = x
    for _ in range(5000):  # far deeper than Python's recursion limit
        y = y * 1.0
    g = viz.collect_graph(y)
    assert g.count("op") == 5000 and len(g.edges) == 5000


def test_freed_graph_raises_and_retained_graph_shows_gradient_shapes():
    w = f64(np.ones((2, 3)), name="w")
    loss = (w * 2.0).sum()
    loss.backward(retain_graph=True)
    dot = viz.to_dot(loss, show_grads=True)
    assert "w\\n(2, 3)\\ngrad (2, 3)" in dot
    assert "grad (" not in viz.to_dot(loss)  # only when asked
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        viz.to_dot(loss)


def test_labels_with_quotes_are_escaped():
    t = f64([1.0], name='say "hi"\\')
    assert 'label="say \\"hi\\"\\\\\\n(1,)"' in viz.to_dot(t * 2.0)


def test_write_graph_writes_dot_and_renders_only_with_graphviz(tmp_path, monkeypatch):
    loss, params = viz.unrolled_cell_loss(2)
    dot, rendered = viz.write_graph(loss, tmp_path / "g.svg", params)
    assert dot == tmp_path / "g.dot" and dot.read_text().startswith("digraph")
    if shutil.which("dot"):
        assert rendered == tmp_path / "g.svg" and "<svg" in rendered.read_text()
        _, png = viz.write_graph(loss, tmp_path / "g2", params, fmt="png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert rendered is None
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)
    assert viz.write_graph(loss, tmp_path / "h.dot", params) == (tmp_path / "h.dot", None)


def test_cli_graph_writes_the_three_step_rnn(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(viz.shutil, "which", lambda name: None)  # the no-graphviz path
    assert cli.main(["graph", "--steps", "3", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "weight_hh feeds 3 ops" in out and "apt-get install graphviz" in out
    dot = (tmp_path / "rnn_graph.dot").read_text()
    labels = [label.split("\\n")[0] for _, label in dot_nodes(dot)]
    assert labels.count("weight_hh") == 1 and labels.count("h0") == 1
    assert [f"x[{t}]" in labels for t in range(3)] == [True] * 3


# ----------------------------------------------------------------------------- gradients through time
ACT = {"tanh": np.tanh, "relu": lambda z: np.maximum(z, 0), "sigmoid": lambda z: 1 / (1 + np.exp(-z))}
DACT = {"tanh": lambda h: 1 - h * h, "relu": lambda h: (h > 0) * 1.0, "sigmoid": lambda h: h * (1 - h)}


def numpy_hidden_grad_norms(xs, h0, w_ih, w_hh, b, act, seed_grad, clip=None):
    """min-char-rnn's backward for dL/dh_t, with the last state's gradient given."""
    hs, h = [], h0
    for x in xs:
        h = ACT[act](x @ w_ih.T + h @ w_hh.T + b)
        hs.append(h)
    norms, dh = np.zeros(len(xs)), seed_grad
    for t in reversed(range(len(xs))):
        n = np.linalg.norm(dh)
        if clip is not None and n > clip:
            dh = dh * (clip / n)
        norms[t] = np.linalg.norm(dh)
        dh = (dh * DACT[act](hs[t])) @ w_hh
    return norms


@pytest.mark.parametrize("act", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("clip", [None, 0.5])
def test_grad_norms_through_time_match_a_numpy_bptt(act, clip):
    tg.manual_seed(3)
    cell = nn.RNNCell(3, 5, nonlinearity=act).double()
    cell.weight_hh.data *= 4.0  # large enough that some curves grow: clipping has work to do
    rng = np.random.default_rng(3)
    xs, h0 = rng.standard_normal((12, 2, 3)), rng.standard_normal((2, 5))
    got = viz.grad_norms_through_time(cell, xs, f64(h0, requires_grad=False), clip=clip)
    seed = np.full((2, 5), 1 / np.sqrt(10))
    want = numpy_hidden_grad_norms(xs, h0, cell.weight_ih.data, cell.weight_hh.data,
                                   cell.bias_ih.data + cell.bias_hh.data, act, seed, clip)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-300)
    assert got[-1] == pytest.approx(min(1.0, clip or 1.0), rel=1e-12)
    if clip is not None:
        assert np.all(got <= clip * (1 + 1e-12))


def test_grad_norms_custom_loss_lstm_and_parameter_grads_untouched():
    tg.manual_seed(0)
    cell = nn.LSTMCell(2, 3).double()
    cell.weight_hh.grad = Tensor(np.full((12, 3), 7.0))
    xs = np.random.default_rng(0).standard_normal((6, 1, 2))
    norms = viz.grad_norms_through_time(cell, xs, loss_fn=lambda hs: sum(h.sum() for h in hs))
    assert norms.shape == (6,) and np.all(norms > 0)
    assert norms[-1] == pytest.approx(np.sqrt(3))  # the last h feeds the loss only: dL/dh = ones
    assert np.all(cell.weight_hh.grad.data == 7.0) and cell.weight_ih.grad is None


def test_spectral_radius_and_power_norms():
    c, s = np.cos(0.3), np.sin(0.3)
    rotation = np.array([[c, -s], [s, c]])
    assert viz.spectral_radius(0.5 * rotation) == pytest.approx(0.5, rel=1e-12)
    assert viz.spectral_radius(Tensor(np.diag([0.2, -3.0, 1.0]))) == pytest.approx(3.0)
    W = np.random.default_rng(1).standard_normal((4, 4))
    want = [np.linalg.norm(np.linalg.matrix_power(W, k), 2) for k in range(1, 9)]
    np.testing.assert_allclose(viz.power_norms(W, 8), want, rtol=1e-12)
    # Gelfand: ||W^k||^(1/k) -> rho(W)
    assert viz.power_norms(W, 400)[-1] ** (1 / 400) == pytest.approx(viz.spectral_radius(W), rel=0.02)
    with pytest.raises(ValueError, match=r"square.*\(2, 3\)"):
        viz.spectral_radius(np.ones((2, 3)))


# ----------------------------------------------------------------------------- hidden heat map
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("heat")
    corpus = root / "small.txt"
    corpus.write_text(builtin_text()[:20_000], encoding="utf-8")
    cfg = charlm.TrainConfig(corpus=str(corpus), hidden=16, seq_len=16, batch_size=8, steps=5,
                             eval_every=0, out=str(root / "run"), seed=1)
    charlm.train(cfg, log=lambda m: None)
    return root / "run" / "last.npz"


def numpy_rnn_states(model, ids):
    p = {k: v.astype(np.float64) for k, v in model.rnn.state_dict().items()}
    h, out = np.zeros(p["weight_hh_l0"].shape[1]), []
    for i in ids:
        h = np.tanh(p["weight_ih_l0"][:, i] + p["bias_ih_l0"] + p["weight_hh_l0"] @ h + p["bias_hh_l0"])
        out.append(h)
    return np.array(out)


def test_hidden_heatmap_writes_png_with_states_and_order(tiny_checkpoint, tmp_path):
    model, vocab, _ = charlm.load_model(tiny_checkpoint)
    text = "The quick brown fox.\nIt jumps."
    act = viz.hidden_heatmap(model, vocab, text, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    want = numpy_rnn_states(model, vocab.encode(text))
    np.testing.assert_allclose(act.states, want, rtol=1e-5, atol=1e-6)  # float32 model
    speed = np.abs(np.diff(act.states, axis=0)).mean(axis=0)
    np.testing.assert_allclose(act.speed, speed, rtol=1e-12)
    assert sorted(act.order.tolist()) == list(range(16))
    assert np.all(np.diff(act.speed[act.order]) >= 0)  # slowest first
    assert np.array_equal(act.shown, act.order)
    few = viz.hidden_heatmap(model, vocab, text, tmp_path / "few.png", units=4)
    assert len(few.shown) == 4 and few.shown[0] == act.order[0] and few.shown[-1] == act.order[-1]
    assert model.training  # restored after the eval-mode pass


def test_cli_viz_hidden(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "sub" / "hidden.png"
    assert cli.main(["viz", "hidden", "--checkpoint", str(tiny_checkpoint), "--text", "hello world",
                     "--out", str(out), "--units", "5"]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert "5 of 16 units over 11 chars" in capsys.readouterr().out


def test_training_curve_writes_a_png_and_returns_the_best_validation(tmp_path):
    history = [{"step": s, "loss": 4.0 / s} for s in range(1, 101)]
    for r, v in ((history[49], 1.5), (history[99], 1.2)):
        r["val_nats"] = v
    curve = viz.training_curve(history, tmp_path / "sub" / "c.png", "a run")
    assert curve == {"steps": 100, "val": [(50, 1.5), (100, 1.2)], "best_val": (100, 1.2)}
    assert (tmp_path / "sub" / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="the history is empty"):
        viz.training_curve([], tmp_path / "e.png")
