"""Recurrent DARTS: data, cells, genotypes, models, architect, search and training."""

import json
import math
from dataclasses import replace

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from darts_lit.cnn.genotypes import GenotypeError
from darts_lit.core.config import ConfigError
from darts_lit.core.data import DataNotFoundError
from darts_lit.core.utils import NonFiniteLossError
from darts_lit.rnn.architect import RNNArchitect
from darts_lit.rnn.data import (
    EOS,
    UNK,
    batchify,
    bptt_windows,
    get_batch,
    get_corpus,
    pydoc_corpus,
    read_ptb,
)
from darts_lit.rnn.model import (
    DARTS_V1,
    DARTS_V2,
    ENAS,
    RNN_GENOTYPES,
    RNN_PRIMITIVES,
    DARTSCellSearch,
    RNNGenotype,
    RNNModel,
    RNNModelSearch,
    derive_rnn_genotype,
    load_rnn_genotype,
    parse_rnn_genotype,
    rnn_param_count,
    save_rnn_genotype,
    validate_rnn_genotype,
)
from darts_lit.rnn.search import (
    RNNSearchConfig,
    check_columns,
    evaluate_lm,
    repackage_hidden,
    search_rnn,
)
from darts_lit.rnn.train import (
    RNNTrainConfig,
    stalled,
    swap_averaged,
    train_rnn,
    train_rnn_epoch,
)

@pytest.fixture(autouse=True)
def one_thread():
    """Tiny recurrent models run faster (and steadier) on one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ptb_dir(shared_data):
    folder = shared_data / "ptb"
    if not (folder / "ptb.train.txt").is_file():
        pytest.skip(f"no PTB at {folder}")
    return folder


# --- data ----------------------------------------------------------------------------

def test_ptb_reader_on_shared_subset(ptb_dir):
    """Vocabulary from the (cut) training file, <eos> per line, OOV → <unk>."""
    c = read_ptb(ptb_dir)
    lines = [len(open(ptb_dir / f).readlines()) for f in
             ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")]
    assert lines == [6778, 3370, 3761]
    # words + one <eos> per line (README: 144,288 / 70,390 / 78,669 words)
    assert (len(c.train), len(c.valid), len(c.test)) == (
        144288 + 6778, 70390 + 3370, 78669 + 3761)
    assert c.ntoken == 7951
    w2i = c.dictionary.word2idx
    first = open(ptb_dir / "ptb.train.txt").readline().split()
    head = [c.dictionary.idx2word[i] for i in c.train[: len(first) + 1]]
    assert head == first + [EOS]
    train_words = set(w2i)
    valid_words = [w for line in open(ptb_dir / "ptb.valid.txt")
                   for w in line.split() + [EOS]]
    expected_unk = sum(w == UNK or w not in train_words for w in valid_words)
    assert int((c.valid == w2i[UNK]).sum()) == expected_unk > 1675


def test_ptb_resolution(ptb_dir, tmp_path, monkeypatch):
    """Explicit path, then DARTS_DATA/ptb, then a clear error."""
    assert get_corpus("ptb", ptb_dir, verbose=False).ntoken == 7951
    assert get_corpus("ptb", ptb_dir.parent, verbose=False).ntoken == 7951
    monkeypatch.setenv("DARTS_DATA", str(ptb_dir.parent))
    assert get_corpus("ptb", verbose=False).source == str(ptb_dir)
    assert get_corpus("auto", verbose=False).name == "ptb"
    monkeypatch.setenv("DARTS_DATA", str(tmp_path))
    with pytest.raises(DataNotFoundError, match="DARTS_DATA"):
        get_corpus("ptb", verbose=False)
    assert get_corpus("auto", verbose=False).name == "pydoc"
    with pytest.raises(ValueError, match="unknown corpus"):
        get_corpus("wikitext")


def test_pydoc_corpus_capped_vocabulary():
    c = pydoc_corpus(max_vocab=300)
    assert c.ntoken == 300 and c.dictionary.idx2word[-1] == UNK
    assert EOS in c.dictionary.word2idx
    assert len(c.train) > 6 * len(c.valid) > 0 and len(c.test) > 0
    assert all(int(s.max()) < 300 for s in (c.train, c.valid, c.test))


def test_batchify_and_windows():
    data = torch.arange(103)
    src = batchify(data, 4)  # [25, 4]
    assert src.shape == (25, 4) and src[:, 2].tolist() == list(range(50, 75))
    x, y = get_batch(src, 20, 10)
    assert x.shape == (4, 4) and torch.equal(y, src[21:25].reshape(-1))
    import numpy as np

    rng = np.random.RandomState(0)
    starts = [i for i, _ in bptt_windows(src, 5, rng)]
    assert starts[0] == 0 and all(b > a for a, b in zip(starts, starts[1:],
                                                        strict=False))


# --- genotypes -----------------------------------------------------------------------

def test_reference_genotypes_roundtrip(tmp_path):
    assert RNN_GENOTYPES["DARTS"] is DARTS_V2
    assert len(ENAS.recurrent) == 11 and len(DARTS_V1.recurrent) == 8
    for name, g in RNN_GENOTYPES.items():
        path = save_rnn_genotype(g, tmp_path / f"{name}.json")
        assert json.loads(path.read_text())["concat"] == list(g.concat)
        assert load_rnn_genotype(path) == g
        assert parse_rnn_genotype(f"x {g} y".replace("RNNGenotype", "Genotype")) == g


@pytest.mark.parametrize("bad, words", [
    (RNNGenotype([("conv", 0)], [1]), "unknown op 'conv'"),
    (RNNGenotype([("relu", 1)], [1]), "reads node 1"),
    (RNNGenotype([("relu", 0)], [0, 2]), "concat"),
    (RNNGenotype([], [0]), "no nodes"),
    (RNNGenotype([("relu", "0")], [1]), "pair"),
])
def test_genotype_validation(bad, words):
    with pytest.raises(GenotypeError, match=words):
        validate_rnn_genotype(bad)


def test_derive_genotype_by_hand():
    """Two steps, worked by hand: none never chosen; the edge with the best non-none."""
    p = torch.tensor([
        [0.90, 0.01, 0.02, 0.03, 0.04],  # 0→1: none dominates, best other: identity
        [0.10, 0.30, 0.30, 0.10, 0.20],  # 0→2: best non-none 0.30 (tanh, first of tie)
        [0.05, 0.10, 0.25, 0.29, 0.31],  # 1→2: best non-none 0.31 (identity)
    ])
    assert derive_rnn_genotype(p, steps=2, concat=2) == RNNGenotype(
        [("identity", 0), ("identity", 1)], [1, 2])
    p[2, 4] = 0.30  # now a tie between 0→2 and 1→2: the first edge wins
    assert derive_rnn_genotype(p, steps=2, concat=2).recurrent[1] == ("tanh", 0)
    with pytest.raises(ValueError):
        derive_rnn_genotype(p, steps=3)


def test_search_model_genotype_uses_softmax_of_alphas():
    torch.manual_seed(0)
    m = RNNModelSearch(20, 4, 4, 4, steps=8)
    with torch.no_grad():
        m.alphas.zero_()
        m.alphas[:, RNN_PRIMITIVES.index("relu")] = 1.0
        m.alphas[3, RNN_PRIMITIVES.index("sigmoid")] = 5.0  # edge 3 = 0→3 (node 3)
    g = m.genotype()
    assert g.recurrent[2] == ("sigmoid", 0) and g.concat == list(range(1, 9))
    assert all(op == "relu" for i, (op, _) in enumerate(g.recurrent) if i != 2)


# --- cells and models ----------------------------------------------------------------

def test_search_cell_gradient_finite_differences():
    """Every input of the search cell (x, h, α, W0, Ws) against finite differences."""
    torch.manual_seed(0)
    cell = DARTSCellSearch(3, 3, 0.0, 0.0, steps=3).double()
    names = [n for n, _ in cell.named_parameters()]

    def f(x, h, alphas, *params):
        probs = F.softmax(alphas, -1)
        out, last = functional_call(cell, dict(zip(names, params, strict=True)),
                                    (x, h, probs))
        return out

    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    alphas = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    params = [p.detach().clone().requires_grad_(True) for p in cell.parameters()]
    assert torch.autograd.gradcheck(f, (x, h, alphas, *params), eps=1e-6, atol=1e-6)


def test_param_count_formula():
    for ntoken, n, g in [(50, 8, DARTS_V2), (33, 5, ENAS), (10, 4, DARTS_V1)]:
        m = RNNModel(ntoken, n, n, n, genotype=g)
        assert sum(p.numel() for p in m.parameters()) == rnn_param_count(
            ntoken, n, n, len(g.recurrent))
    s = RNNModelSearch(50, 8, 8, 8)
    assert sum(p.numel() for p in s.weights()) == rnn_param_count(50, 8, 8)
    assert sum(p.numel() for p in s.parameters()) == rnn_param_count(50, 8, 8) + 36 * 5
    # the paper's evaluation model: 10,000 words, 850 units (paper: "23M")
    assert rnn_param_count(10000, 850, 850) == 22_960_000
    big = RNNModel(10000, 850, 850, 850, genotype=DARTS_V2)
    assert sum(p.numel() for p in big.parameters()) == 22_960_000
    assert big.decoder.weight is big.encoder.weight


def test_untrained_perplexity_is_vocabulary_size():
    torch.manual_seed(0)
    V = 400
    data = batchify(torch.randint(V, (2000,)), 10)
    m = RNNModel(V, 16, 16, 16, genotype=DARTS_V2)
    ppl = math.exp(evaluate_lm(m, data, bptt=35))
    assert abs(ppl / V - 1) < 0.05, ppl
    # the search model before any training: BatchNorm needs batch statistics (its
    # running statistics are not yet learned), so measure it in training mode
    s = RNNModelSearch(V, 16, 16, 16, 0.0, 0.0, 0.0, 0.0, 0.0).train()
    with torch.no_grad():
        loss, _ = s.loss(data[:-1], data[1:].reshape(-1), s.init_hidden(10))
    assert abs(math.exp(loss.item()) / V - 1) < 0.05, loss.exp()


def test_hidden_state_is_detached_between_batches():
    """The training loop hands the model a hidden state with no history."""
    torch.manual_seed(0)
    m = RNNModel(30, 6, 6, 6, genotype=DARTS_V2)
    seen = []
    forward = m.forward

    def spy(x, hidden, return_h=False):
        seen.append((hidden.requires_grad, hidden.grad_fn))
        return forward(x, hidden, return_h)

    m.forward = spy
    cfg = RNNTrainConfig(batch_size=4, bptt=5, max_steps_per_epoch=5, grad_clip=0.25)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    train_rnn_epoch(m, opt, batchify(torch.randint(30, (200,)), 4), cfg)
    assert len(seen) == 5 and all(rg is False and fn is None for rg, fn in seen)
    h = torch.zeros(1, 2, 3, requires_grad=True) * 2
    assert repackage_hidden([h, (h,)])[1][0].grad_fn is None


def test_graph_does_not_grow_across_batches():
    torch.manual_seed(0)
    m = RNNModelSearch(30, 6, 6, 6)

    def nodes(t):
        seen, todo = set(), [t.grad_fn]
        while todo:
            f = todo.pop()
            if f is not None and f not in seen:
                seen.add(f)
                todo.extend(g for g, _ in f.next_functions)
        return len(seen)

    src = batchify(torch.randint(30, (100,)), 2)
    hidden, sizes = m.init_hidden(2), []
    for i in range(0, 15, 5):
        x, y = get_batch(src, i, 5)
        loss, hidden = m.loss(x, y, repackage_hidden(hidden))
        sizes.append(nodes(loss))
    assert sizes[0] == sizes[1] == sizes[2]


# --- architect, search and training --------------------------------------------------

@pytest.mark.parametrize("unrolled", [False, True])
def test_architect_step_leaves_weights_and_statistics(unrolled):
    torch.manual_seed(0)
    m = RNNModelSearch(30, 6, 6, 6)
    arch = RNNArchitect(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    src = batchify(torch.randint(30, (200,)), 4)
    (x, y), (xv, yv) = get_batch(src, 0, 6), get_batch(src, 10, 6)
    h = m.init_hidden(4)
    loss, h_next = arch.step(h, x, y, h, xv, yv, eta=20.0, unrolled=unrolled)
    after = m.state_dict()
    for k, v in before.items():
        if k == "alphas":
            assert not torch.equal(v, after[k])
        else:
            assert torch.equal(v, after[k]), k
    assert h_next.shape == (1, 4, 6) and not h_next.requires_grad
    assert torch.isfinite(loss) and m.alphas.grad is not None


def test_stalled_rule():
    assert not stalled([3.0] * 5, 9.0, nonmono=5)
    assert stalled([3.0] * 6, 3.5, nonmono=5)
    assert stalled([3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0], 2.5, nonmono=5)  # > min(3, 2)
    assert not stalled([3.0, 2.0, 1.0, 1.0, 1.0, 1.0, 1.0], 1.5, nonmono=5)
    with pytest.raises(ValueError):
        stalled([1.0], 1.0, nonmono=0)


def test_swap_averaged_is_an_involution():
    torch.manual_seed(0)
    m = RNNModel(20, 4, 4, 4, genotype=DARTS_V2)
    opt = torch.optim.ASGD(m.parameters(), lr=0.5, t0=0, lambd=0.0)
    for _ in range(3):
        loss, _ = m.loss(torch.randint(20, (5, 2)), torch.randint(20, (10,)),
                         m.init_hidden(2))
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = [p.detach().clone() for p in m.parameters()]
    swap_averaged(m, opt)
    assert any(not torch.equal(a, p) for a, p in zip(w, m.parameters(), strict=True))
    swap_averaged(m, opt)
    assert all(torch.equal(a, p) for a, p in zip(w, m.parameters(), strict=True))


def _tiny_search(**kw):
    return RNNSearchConfig(dataset="pydoc", max_vocab=100, emsize=6, nhid=6, steps=3,
                           batch_size=8, bptt=6, eval_batch_size=16, device="cpu",
                           max_steps_per_epoch=2, seed=3, **kw)


def test_search_resume_is_bit_exact(tmp_path):
    cfg2 = _tiny_search(epochs=2)
    straight = search_rnn(cfg2, verbose=False)
    search_rnn(_tiny_search(epochs=1), out_dir=tmp_path, verbose=False)
    resumed = search_rnn(cfg2, out_dir=tmp_path, resume=True, verbose=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert [h["valid_loss"] for h in straight.history] == [
        h["valid_loss"] for h in resumed.history]
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert load_rnn_genotype(tmp_path / "genotype.json") == resumed.model.genotype()
    assert resumed.summary == {"genotype": resumed.history[-1]["genotype"]}
    assert len(json.loads((tmp_path / "history.json").read_text())) == 2


def test_evaluation_refuses_a_nan_validation_loss():
    """Weights grown 10^4-fold overflow the recurrence within 17 steps in float32: the
    mean is NaN, and `evaluate_lm` raises instead of returning it (the same model at its
    initial weights gives a finite loss)."""
    torch.manual_seed(0)
    lm = RNNModelSearch(30, 6, 6, 6, 0.0, 0.0, 0.0, 0.0, 0.0, steps=3).eval()
    stream = torch.randint(30, (17, 2))
    assert math.isfinite(evaluate_lm(lm, stream, bptt=4))
    with torch.no_grad():
        for p in lm.rnns.parameters():
            p.mul_(1e4)
    with pytest.raises(NonFiniteLossError, match=r"^the validation loss is nan at "
                       r"evaluation: the recurrence probably overflowed"):
        evaluate_lm(lm, stream, bptt=4)


@pytest.mark.parametrize("kind", ["search", "train"])
def test_a_nan_validation_loss_stops_the_run_and_keeps_the_last_checkpoint(
        kind, tmp_path, monkeypatch):
    """Epoch 2's evaluation overflows (its weights multiplied by 10^4 before it): the
    run stops with one message naming the kept checkpoint of epoch 1 and the option to
    lower; the run folder holds epoch 1 only, and no NaN reaches the history."""
    import darts_lit.rnn.search as rsearch
    import darts_lit.rnn.train as rtrain

    module = rsearch if kind == "search" else rtrain
    real, calls = module.evaluate_lm, []

    def overflowing(model, data, bptt=35):
        calls.append(1)
        if len(calls) == 2:
            with torch.no_grad():
                for p in model.rnns.parameters():
                    p.mul_(1e4)
        return real(model, data, bptt)

    monkeypatch.setattr(module, "evaluate_lm", overflowing)
    run = search_rnn if kind == "search" else train_rnn
    config = _tiny_search(epochs=3) if kind == "search" else _tiny_train(epochs=3)
    with pytest.raises(NonFiniteLossError) as e:
        run(config, out_dir=tmp_path, verbose=False)
    message = str(e.value)
    assert message.startswith("the validation loss is nan at evaluation")
    assert f"The checkpoint of epoch 1 (finite values) is kept in {tmp_path}" in message
    assert "Start a new run with a lower learning_rate" in message  # (--learning-rate
    # on the command line)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert math.isfinite(history[0]["valid_loss"])


@pytest.mark.parametrize(("run", "option", "split"), [
    ("search", "batch_size", "valid"),  # a search's batch_size cuts valid too, smaller
    ("search", "eval_batch_size", "valid"), ("train", "batch_size", "train"),
    ("train", "test_batch_size", "test")])
def test_more_columns_than_half_a_split_is_refused_before_training(run, option, split,
                                                                   tmp_path):
    """A batch too wide for a split would leave no batch at all (a run that never
    trains): one message naming the option and the most the corpus allows, and no
    run folder written."""
    corpus = get_corpus("pydoc", None, 100, verbose=False)
    tokens = len(getattr(corpus, split))
    if split == "valid" and option == "batch_size":  # wider than valid, not train
        assert len(corpus.train) // (tokens // 2 + 1) >= 2
    fn, base = ((search_rnn, _tiny_search()) if run == "search" else
                (train_rnn, RNNTrainConfig(dataset="pydoc", max_vocab=100, emsize=6,
                                           device="cpu", max_steps_per_epoch=2)))
    with pytest.raises(ConfigError, match=(
            f"^{option}: {tokens // 2 + 1} columns leave fewer than 2 tokens per "
            f"column of the {tokens:,}-token {split} split of pydoc; give at most "
            f"{tokens // 2}$")):
        fn(base, **{option: tokens // 2 + 1}, out_dir=str(tmp_path / "run"),
           verbose=False)
    assert not (tmp_path / "run").exists()
    # the largest value allowed is accepted by the check
    check_columns(replace(base, **{option: tokens // 2}), corpus)


def test_second_order_search_runs():
    hist = search_rnn(_tiny_search(epochs=1, unrolled=True), verbose=False).history
    assert math.isfinite(hist[0]["valid_loss"]) and len(hist[0]["alphas"]) == 6


def _tiny_train(**kw):
    kw.setdefault("genotype", "DARTS_V1")
    return RNNTrainConfig(dataset="pydoc", max_vocab=100, emsize=6,
                          nhid=6, batch_size=8, bptt=6, eval_batch_size=16,
                          test_batch_size=16, device="cpu", max_steps_per_epoch=2,
                          seed=3, **kw)


def test_train_resume_is_bit_exact(tmp_path):
    straight = train_rnn(_tiny_train(epochs=3), verbose=False)
    train_rnn(_tiny_train(epochs=2), out_dir=tmp_path, verbose=False)
    resumed = train_rnn(_tiny_train(epochs=3), out_dir=tmp_path, resume=True,
                        verbose=False)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert straight.summary["test_ppl"] == resumed.summary["test_ppl"]
    assert straight.history == resumed.history
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["params"] == rnn_param_count(100, 6, 6)


def test_train_switches_to_asgd_when_validation_stalls(monkeypatch):
    """Validation losses 1, 2, 3, ...: with nonmono=1 the third epoch switches."""
    import darts_lit.rnn.train as rs

    losses = iter(range(1, 100))
    monkeypatch.setattr(rs, "evaluate_lm", lambda *a, **k: float(next(losses)))
    res = train_rnn(_tiny_train(epochs=5, nonmono=1), verbose=False)
    kinds = [h["optimizer"] for h in res.history]
    assert kinds == ["sgd", "sgd", "sgd", "asgd", "asgd"], kinds
    assert res.summary["best_epoch"] == 1


def test_train_with_genotype_file(tmp_path):
    path = save_rnn_genotype(ENAS, tmp_path / "g.json")
    res = train_rnn(_tiny_train(epochs=1, genotype=str(path)), verbose=False)
    assert res.model.rnns[0].genotype == ENAS and math.isfinite(res.summary["test_ppl"])
    with pytest.raises(ValueError, match="recurrent genotype 'NOPE' is neither a "
                                         "reference genotype"):
        train_rnn(_tiny_train(epochs=1, genotype="NOPE"), verbose=False)


# --- command line --------------------------------------------------------------------

TINY_CLI = ["--dataset", "pydoc", "--max-vocab", "100", "--emsize", "6", "--batch-size",
            "8", "--bptt", "6", "--max-steps-per-epoch", "2", "--device", "cpu",
            "--quiet"]


def test_cli_search_rnn_resume_and_train_rnn(tmp_path, capsys):
    from darts_lit.cli import main

    out = tmp_path / "s"
    args = ["search-rnn", *TINY_CLI, "--nodes", "3", "--epochs", "2", "--out", str(out)]
    assert main([*args, "--stop-after", "1"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 1
    assert main([*args, "--resume"]) == 0
    assert len(json.loads((out / "history.json").read_text())) == 2
    assert (out / "cell.png").is_file() and (out / "perplexity.png").is_file()
    assert "genotype: RNNGenotype(recurrent=" in capsys.readouterr().out
    run = tmp_path / "t"
    assert main(["train-rnn", *TINY_CLI, "--genotype", str(out / "genotype.json"),
                 "--epochs", "1", "--eval-batch-size", "16", "--test-batch-size", "16",
                 "--out", str(run)]) == 0
    assert "test perplexity" in capsys.readouterr().out
    assert (run / "model.pt").is_file() and (run / "result.json").is_file()


def test_cli_errors(tmp_path, capsys):
    from darts_lit.cli import main

    assert main(["search-rnn", "--hvp", "exact"]) == 1
    assert main(["train-rnn", "--resume"]) == 1
    assert main(["train-rnn", *TINY_CLI, "--genotype", "NOPE", "--out",
                 str(tmp_path)]) == 1
    assert main(["search-rnn", *TINY_CLI, "--dataset", "ptb", "--data-dir",
                 str(tmp_path), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "--hvp: 'exact' needs the second-order search (--unrolled)" in err
    assert "recurrent genotype 'NOPE' is neither a reference genotype" in err
    assert "Penn Treebank not found" in err


def test_no_silent_overwrite(tmp_path):
    search_rnn(_tiny_search(epochs=1), out_dir=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="already holds a run; continue it with "):
        search_rnn(_tiny_search(epochs=1), out_dir=tmp_path, verbose=False)
