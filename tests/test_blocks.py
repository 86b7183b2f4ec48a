"""The fast path's blocks (tinygrad_rnn/fast/blocks.py): a recurrent loop's states as rows of
one block, each row handed out once, joined without a copy by the fast accumulator, and
nothing of that changes a value or a gradient (each case against the plain path)."""
from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

import tinygrad_rnn as tg
from tinygrad_rnn import nn
from tinygrad_rnn.fast import accumulate, blocks, lazy
from modes import path

# A tolerance's comment gives the largest error seen over 3 runs with fresh random data, as a
# fraction of what it allows and as |error| (measure: python tests/measure_tolerances.py tests/test_blocks.py)


def loop(cell, xs, h=None):
    outs = []
    for x in xs:
        h = cell(x, h)
        outs.append(h)
    return outs


def cell_and_inputs(T=10, B=3, I=4, H=5, seed=0, dtype=np.float64):
    tg.manual_seed(seed)
    cell = nn.RNNCell(I, H).to(dtype)
    xs = [tg.Tensor(np.random.default_rng(seed + t).standard_normal((B, I)).astype(dtype)) for t in range(T)]
    return cell, xs


# ----------------------------------------------------------------------------- handing out rows
def test_next_row_continues_only_from_the_row_handed_out_last():
    h0 = np.zeros((2, 3))
    a, block, t = blocks.next_row(h0)
    assert t == 0 and a.shape == (2, 3) and a.dtype == h0.dtype
    b, block_b, t_b = blocks.next_row(a)
    assert block_b is block and t_b == 1 and np.shares_memory(a.base, b)
    c, block_c, t_c = blocks.next_row(a)  # a again: its next row is b's, so a new block
    assert block_c is not block and t_c == 0 and not np.shares_memory(b, c)
    d, block_d, t_d = blocks.next_row(b)  # b is no longer the last row handed out
    assert block_d is not block and t_d == 0


def test_a_full_block_starts_the_next_and_a_wide_row_gets_a_smaller_block(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_ROWS", 3)
    h = np.zeros((1, 2), np.float32)
    seen = []
    for _ in range(7):
        h, block, t = blocks.next_row(h)
        seen.append(t)
    assert seen == [0, 1, 2, 0, 1, 2, 0]
    monkeypatch.setattr(blocks, "BLOCK_BYTES", 64)
    wide, block, _ = blocks.next_row(np.zeros(10, np.float32))  # 40 bytes a row: 1 row fits
    assert block.rows().shape == (1, 10)


def test_a_block_lives_exactly_as_long_as_one_of_its_rows():
    a, block, _ = blocks.next_row(np.zeros(4))
    b, _, _ = blocks.next_row(a)
    b[...] = 7.0
    del a
    gc.collect()
    assert block.rows() is not None and np.all(b == 7.0)  # b keeps the block and its values
    del b
    gc.collect()
    assert block.rows() is None


def test_each_thread_fills_its_own_block():
    got = {}

    def run(name):
        h = np.zeros((1, 2))
        rows = []
        for _ in range(20):
            h, block, t = blocks.next_row(h)
            h[...] = hash(name) % 1000
            rows.append((block, t))
        got[name] = (rows, h)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    (rows_a, _), (rows_b, _) = got["a"], got["b"]
    assert [t for _, t in rows_a] == list(range(20)) and [t for _, t in rows_b] == list(range(20))
    assert rows_a[0][0] is not rows_b[0][0]


# ----------------------------------------------------------------------------- the cell's states
def test_a_cell_loops_states_are_rows_of_one_block_and_stack_copies_them():
    cell, xs = cell_and_inputs(T=10)
    outs = loop(cell, xs)
    block = outs[0].data.base
    assert block is not None and all(o.data.base is block for o in outs)
    hs = tg.stack(outs)
    assert not any(np.shares_memory(o.data, hs.data) for o in outs)
    assert all(np.array_equal(o.data, hs.data[t]) for t, o in enumerate(outs))
    along1 = tg.stack(outs, dim=1)
    assert np.array_equal(along1.data, hs.data.transpose(1, 0, 2))


def test_branching_from_an_old_state_overwrites_nothing():
    cell, xs = cell_and_inputs(T=4)
    h1 = cell(xs[0])
    h2 = cell(xs[1], h1)
    kept = h2.data.copy()
    h2b = cell(xs[2], h1)  # the row after h1 is h2's: this step must write elsewhere
    h3 = cell(xs[3], h2)  # h2 is not the last row handed out either
    assert np.array_equal(h2.data, kept)
    assert not np.shares_memory(h2b.data, h2.data) and not np.shares_memory(h3.data, h2b.data)
    with tg.no_grad():
        again = cell(xs[1], h1)
    assert np.array_equal(again.data, kept)


def test_a_state_replaced_through_data_is_not_stacked_as_its_old_row():
    cell, xs = cell_and_inputs(T=5)
    outs = loop(cell, xs)
    block_rows = outs[0].data.base
    outs[2].data = np.full_like(outs[2].data, 3.0)
    hs = tg.stack(outs)
    assert np.all(hs.data[2] == 3.0) and not np.shares_memory(hs.data, block_rows)
    assert all(np.array_equal(o.data, hs.data[t]) for t, o in enumerate(outs))


@pytest.mark.parametrize("ids", [False, True], ids=["dense", "token-ids"])
def test_the_engine_sums_every_weight_gradient_over_views_of_the_rows(monkeypatch, ids):
    """Each step keeps dL/dpre in a row of its block's gradient twin and extends one run per
    weight (lazy.RowsGrad), so the fast accumulator evaluates W_hh's gradient as one product of two
    views (the twin's rows, the states' rows), and the biases' and W_ih's as one pass over the
    twin's rows; the values equal the generic ops' to rounding."""
    T, B, I, H = 9, 3, 5, 12
    R = lazy.RowsGrad
    evaluated, joined = [], []
    evaluate = R.evaluate
    monkeypatch.setattr(R, "evaluate", staticmethod(
        lambda run: evaluated.append((run[0].how, run[0].t0, run[0].t1, len(run))) or evaluate(run)))
    for name in ("a_rows", "b_rows"):
        rows = getattr(lazy, name)
        monkeypatch.setattr(lazy, name, lambda run, rows=rows, name=name:
                            joined.append((name, len(run), rows(run))) or joined[-1][2])
    rng = np.random.default_rng(4)
    inputs = rng.integers(0, I, (T, B)) if ids else rng.standard_normal((T, B, I))

    def grads(fused):
        with path(fused):
            tg.manual_seed(4)
            cell = nn.RNNCell(I, H).double()
            outs = loop(cell, [x if ids else tg.Tensor(x) for x in inputs])
            (tg.stack(outs) ** 2).sum().backward()
            return [p.grad.data for p in cell.parameters()]

    fused = grads(True)
    assert fused[2] is not fused[3] and np.array_equal(fused[2], fused[3])  # b_ih, b_hh: equal, not one array
    # W_hh: steps 1..T-1 as one run (step 0's state is no block row: its product goes alone);
    # the biases: all T steps as one run, which each bias sums; W_ih:
    # token ids all T as one run, dense inputs T products joined into one (their rows copied)
    want = [(R.OUTER, 1, T - 1, 1)] + [(R.ROWSUM, 0, T - 1, 1)] * 2 + ([(R.COLUMNS, 0, T - 1, 1)] if ids else [])
    assert sorted(evaluated) == sorted(want)
    step0 = [("a_rows", 1), ("b_rows", 1)]  # step 0's W_hh product
    assert sorted((name, n) for name, n, _ in joined) == sorted(step0 + ([] if ids else [("a_rows", T), ("b_rows", T)]))
    for name, n, rows in joined:
        if name == "a_rows":
            assert rows.base is not None and rows.shape == (n * B, H)  # the twin's rows, a view
    for a, b in zip(fused, grads(False)):
        # largest error seen: 1/42 of the bound, 1.8e-15
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- gradient rows
def test_grad_row_is_a_row_of_the_walks_own_twin_and_a_plain_array_outside_a_walk():
    out, block, t = blocks.next_row(np.zeros((2, 3)))
    row, at = blocks.grad_row(block, t, out)
    assert at is None and row.shape == out.shape and row.base is None  # no walk: nothing to join
    with blocks.walk():
        row, (twin, t0) = blocks.grad_row(block, t, out)
        again, (twin_again, _) = blocks.grad_row(block, t + 1, out)
        assert twin_again is twin and row.base is twin and t0 == t and np.shares_memory(twin[t + 1], again)
        with blocks.walk():  # a walk inside (a hook calling backward) gets a twin of its own
            inner, (inner_twin, _) = blocks.grad_row(block, t, out)
            assert inner_twin is not twin
        after, (after_twin, _) = blocks.grad_row(block, t + 2, out)
        assert after_twin is not inner_twin  # the outer walk's rows go on in a twin of its own
        wrong, at = blocks.grad_row(block, t, np.zeros((2, 4)))  # not the block's row shape
        assert at is None
    del row, again, inner, twin, twin_again, inner_twin, after, after_twin
    gc.collect()
    assert block.twin[1]() is None  # held only by what the engine still has to evaluate


def loss_of_a_loop(cell, xs):
    hs = tg.stack(loop(cell, xs))
    return (hs * hs).sum()


def test_two_walks_over_one_retained_graph_each_sum_their_own_rows():
    cell, xs = cell_and_inputs(T=7)
    loss = loss_of_a_loop(cell, xs)
    loss.backward(retain_graph=True)
    once = [p.grad.data.copy() for p in cell.parameters()]
    loss.backward()
    for p, g in zip(cell.parameters(), once):
        np.testing.assert_array_equal(p.grad.data, g + g)


def test_walks_in_two_threads_over_one_retained_graph_get_the_same_gradients():
    """Each thread's walk writes dL/dpre into its own twin: the gradients the leaves receive
    (read by hooks, per thread; the shared .grad sums are not what is checked) are the ones a
    single walk gives. A walk reading another's twin would get other rows' values, wrong in
    the leading digits; OpenBLAS called from two threads at once may sum in another order
    (largest seen here: 2.1e-15 relative, 1 in 4 runs of the test), so the bound is 2e-13."""
    cell, xs = cell_and_inputs(T=30, B=4, H=16)
    params = list(cell.parameters())
    loss = loss_of_a_loop(cell, xs)
    seen = threading.local()
    for i, p in enumerate(params):
        p.register_hook(lambda g, i=i: seen.grads.__setitem__(i, g.data.copy()))

    def walk(rounds, results):
        for _ in range(rounds):
            seen.grads = {}
            loss.backward(retain_graph=True)
            results.append(seen.grads)
    want = []
    walk(1, want)
    results = [[], []]
    threads = [threading.Thread(target=walk, args=(50, r)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [len(r) for r in results] == [50, 50]
    for got in results[0] + results[1]:
        for i in range(len(params)):
            np.testing.assert_allclose(got[i], want[0][i], rtol=2e-13, atol=0)


def test_a_small_row_budget_evaluates_gradient_rows_early_with_the_same_gradients(monkeypatch):
    """`OUTER_ROWS` bounds the rows waiting per weight: with a budget of 2 steps' rows the
    sums are evaluated in many pieces (and twins are freed and made anew mid-block)."""
    def grads():
        cell, xs = cell_and_inputs(T=11, B=3, I=4, H=5, seed=5)
        loss_of_a_loop(cell, xs).backward()
        return [p.grad.data for p in cell.parameters()]
    want = grads()
    monkeypatch.setattr(accumulate, "OUTER_ROWS", 6)
    for a, b in zip(grads(), want):
        # largest error seen: 1/22 of the bound, 1.1e-14
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_one_tensor_as_both_weights_gets_both_gradient_rows():
    """w_ih and w_hh the same tensor: each step's dL/dpre row reaches it twice, as the input's
    product and as the state's; the engine must not read the second as the next step's row
    (a hypothesis fuzz program found this)."""
    from tinygrad_rnn.nn.rnn import _rnn_step_unfused
    from tinygrad_rnn.fast.steps import RNNCellStep
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((3, 4)) for _ in range(6)]
    w_data, b_data = rng.standard_normal((4, 4)) * 0.5, rng.standard_normal(4)

    def grads(step):
        w, b = tg.Tensor(w_data, requires_grad=True), tg.Tensor(b_data, requires_grad=True)
        h, outs = tg.Tensor(np.zeros((3, 4))), []
        for x in xs:
            h = step(tg.Tensor(x), h, w, w, b, b)
            outs.append(h)
        (tg.stack(outs) ** 2).sum().backward()
        return w.grad.data, b.grad.data

    fused = grads(lambda *a: RNNCellStep.apply(*a, nonlinearity="tanh"))
    for got, want in zip(fused, grads(lambda *a: _rnn_step_unfused(*a, "tanh"))):
        # largest error seen: 1/11 of the bound, 1.8e-15
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("case", ["b_ih used elsewhere too", "b_hh frozen", "small row budget"])
def test_the_biases_shared_share_is_each_ones_own_gradient(monkeypatch, case):
    """Both biases of a step receive one RowSumGrad (or run); when the two lists differ (a bias
    also used elsewhere, or only one wants a gradient) each still gets exactly its own sum, as
    the op-by-op graph gives it."""
    if case == "small row budget":
        monkeypatch.setattr(accumulate, "OUTER_ROWS", 6)

    def grads(fused):
        with path(fused):
            cell, xs = cell_and_inputs(T=8, seed=7)
            if case == "b_hh frozen":
                cell.bias_hh.requires_grad_(False)
            loss = loss_of_a_loop(cell, xs)
            if case == "b_ih used elsewhere too":
                loss = loss + (cell.bias_ih * cell.bias_ih).sum()
            loss.backward()
            return [None if p.grad is None else p.grad.data for p in (cell.bias_ih, cell.bias_hh)]

    fused, want = grads(True), grads(False)
    for got, ref in zip(fused, want):
        if ref is None:
            assert got is None
        else:
            # largest error seen: 1/53 of the bound, 8.9e-16
            np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-15)
    if case == "b_ih used elsewhere too":
        assert not np.allclose(fused[0], fused[1])


@pytest.mark.parametrize("case", ["two cells take turns", "b_hh frozen for some steps", "truncated BPTT",
                                  "anomaly mode", "small row budget", "one run kept"])
def test_a_run_of_steps_sends_each_weight_exactly_its_own_gradient(monkeypatch, case):
    """A step's backward extends the runs the step after it began (lazy.RowsGrad) instead of
    sending its own weight gradients. Runs keep apart what must stay apart: two cells whose
    steps share one block (each weight gets only its own steps' rows), steps that need different
    biases, a loop continued from a detached state in the same block, runs the engine evaluates
    early (a small row budget) or forgets (one run kept); anomaly mode sends each step's own.
    Each parameter's gradient equals the op-by-op graph's."""
    if case == "small row budget":  # and W_hh used between the steps: its list fills up mid-run
        monkeypatch.setattr(accumulate, "OUTER_ROWS", 7)
        monkeypatch.setattr(accumulate, "OUTER_MIN_SIZE", 0)
    if case == "one run kept":
        monkeypatch.setattr(blocks, "RUNS_KEPT", 1)
    T, B, I, H = 10, 3, 6, 5
    ids = np.random.default_rng(5).integers(0, I, (T, B))

    def grads(fused):
        with path(fused):
            tg.manual_seed(5)
            cells = [nn.RNNCell(I, H).double() for _ in range(2)]
            h, outs, extra = None, [], []
            for t in range(T):
                cell = cells[t % 2] if case == "two cells take turns" else cells[0]
                if case == "b_hh frozen for some steps":
                    cell.bias_hh.requires_grad_(not 3 <= t < 6)
                h = cell(ids[t], h)
                outs.append(h)
                if case == "small row budget":
                    extra.append(((h * h) @ cell.weight_hh).sum())
                if case == "truncated BPTT" and t == 4:  # the rest continues in the same block
                    (tg.stack(outs) ** 2).sum().backward()
                    h, outs = h.detach(), []
            loss = (tg.stack(outs) ** 2).sum()
            for e in extra:
                loss = loss + e
            if case == "anomaly mode":
                with tg.detect_anomaly():
                    loss.backward()
            else:
                loss.backward()
            return [None if p.grad is None else p.grad.data for c in cells for p in c.parameters()]

    fused = grads(True)
    for got, want in zip(fused, grads(False)):
        if want is None:
            assert got is None
        else:
            # largest error seen: 1/23 of the bound, 8.9e-16
            np.testing.assert_allclose(got, want, rtol=5e-14, atol=5e-16)


def test_a_walk_leaves_no_gradient_twin_behind():
    """The twins live only while the engine still has rows of them to evaluate: after
    backward, the blocks (still alive through the states) hold none."""
    cell, xs = cell_and_inputs(T=12, B=3, I=4, H=5)
    outs = loop(cell, xs)
    (tg.stack(outs) ** 2).sum().backward()
    gc.collect()
    block = outs[0]._ctx.out_at[0]
    assert block.rows() is not None  # the states are alive...
    assert block.twin[0] is not None and block.twin[1]() is None  # ...their twin, once made, is gone
