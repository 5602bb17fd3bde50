"""Unit tests of darts_lit.cnn.genotypes (tooling) and darts_lit.cnn.model_search."""

import json

import matplotlib
import numpy as np
import pytest
import torch
from torch.nn import functional as F

import darts_lit
from darts_lit.cnn import genotypes as G
from darts_lit.cnn.cell_figures import plot_alphas, plot_cell
from darts_lit.cnn.genotypes import (
    DARTS_V2,
    GENOTYPES,
    Genotype,
    GenotypeError,
    genotype_from_dict,
    genotype_to_dict,
    load_genotype,
    parse_genotype,
    save_genotype,
    validate_cell,
    validate_genotype,
)
from darts_lit.cnn.model_search import Cell, Network, derive_cell, num_edges
from darts_lit.cnn.ops import OPS, PRIMITIVES

matplotlib.use("Agg")
P = {name: i for i, name in enumerate(PRIMITIVES)}


# ---- deriving a genotype ------------------------------------------------------------
def paper_parse(weights: np.ndarray, steps: int) -> list:
    """`Network.genotype._parse` of the paper's code (model_search.py), transcribed."""
    gene, n, start = [], 2, 0
    for i in range(steps):
        end = start + n
        W = weights[start:end].copy()
        edges = sorted(range(i + 2), key=lambda x: -max(
            W[x][k] for k in range(len(W[x])) if k != PRIMITIVES.index("none")))[:2]
        for j in edges:
            k_best = None
            for k in range(len(W[j])):
                if k != PRIMITIVES.index("none"):
                    if k_best is None or W[j][k] > W[j][k_best]:
                        k_best = k
            gene.append((PRIMITIVES[k_best], j))
        start = end
        n += 1
    return gene


@pytest.mark.parametrize("steps", [1, 2, 4, 5])
def test_derive_cell_matches_the_paper_code_on_random_alpha(steps):
    g = torch.Generator().manual_seed(steps)
    for _ in range(20):
        alpha = 3 * torch.randn(num_edges(steps), len(PRIMITIVES), generator=g)
        expected = paper_parse(F.softmax(alpha, dim=-1).numpy(), steps)
        assert derive_cell(alpha, steps) == expected


def test_ranking_uses_softmax_not_raw_alpha():
    # edge 0→2: raw α 5 on every op but none (softmax ≈ 0.14 each);
    # edge 1→2: α 1 on sep_conv_3x3 (softmax e/(e+7) ≈ 0.28). Raw α ranks 0→2 first.
    alpha = torch.zeros(num_edges(1), len(PRIMITIVES))
    alpha[0, 1:] = 5.0
    alpha[1, P["sep_conv_3x3"]] = 1.0
    assert derive_cell(alpha, 1) == [("sep_conv_3x3", 1), ("max_pool_3x3", 0)]
    raw_first = max(range(2), key=lambda j: alpha[j, 1:].max().item())
    assert raw_first == 0  # a raw-α ranking would disagree


def test_none_dominating_every_edge_is_never_chosen():
    # `none` has the largest α on every edge; the rule looks past it. Into node 3,
    # edge 2→3 has the strongest non-none weight (dil_conv_5x5), edge 1→3 the next.
    alpha = torch.zeros(num_edges(2), len(PRIMITIVES))
    alpha[:, P["none"]] = 8.0
    alpha[0, P["avg_pool_3x3"]] = 1.0  # 0→2
    alpha[1, P["sep_conv_5x5"]] = 2.0  # 1→2
    alpha[2, P["skip_connect"]] = 0.5  # 0→3
    alpha[3, P["max_pool_3x3"]] = 1.5  # 1→3
    alpha[4, P["dil_conv_5x5"]] = 3.0  # 2→3
    assert derive_cell(alpha, 2) == [("sep_conv_5x5", 1), ("avg_pool_3x3", 0),
                                     ("dil_conv_5x5", 2), ("max_pool_3x3", 1)]


def test_none_dominated_edge_loses_to_weaker_raw_alpha():
    # 0→3 has max_pool α = 4 but none α = 12, so its max_pool weight is tiny;
    # 1→3 and 2→3 with α = 0.3 on one op win.
    alpha = torch.zeros(num_edges(2), len(PRIMITIVES))
    alpha[2, P["none"]], alpha[2, P["max_pool_3x3"]] = 12.0, 4.0
    alpha[3, P["sep_conv_3x3"]] = 0.3
    alpha[4, P["skip_connect"]] = 0.3
    assert derive_cell(alpha, 2)[2:] == [("sep_conv_3x3", 1), ("skip_connect", 2)]


def test_ties_go_to_the_lower_input_and_the_earlier_op():
    alpha = torch.zeros(num_edges(4), len(PRIMITIVES))
    assert derive_cell(alpha, 4) == [("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4


@pytest.mark.parametrize("steps,multiplier", [(4, 4), (3, 2), (2, 1), (5, 3)])
def test_network_genotype_concat_and_validity(steps, multiplier):
    torch.manual_seed(0)
    net = Network(4, 10, 3, steps=steps, multiplier=multiplier, in_channels=1)
    g = validate_genotype(net.genotype())
    concat = list(range(2 + steps - multiplier, 2 + steps))
    assert g.normal_concat == g.reduce_concat == concat
    assert len(g.normal) == len(g.reduce) == 2 * steps
    assert g.normal == derive_cell(net.alphas_normal, steps)
    assert g.reduce == derive_cell(net.alphas_reduce, steps)


def test_network_genotype_reads_its_own_alpha():
    torch.manual_seed(0)
    net = Network(4, 10, 3, in_channels=1)
    with torch.no_grad():
        net.alphas_normal.zero_()
        net.alphas_normal[:, P["sep_conv_5x5"]] = 1.0
        net.alphas_reduce.zero_()
        net.alphas_reduce[:, P["avg_pool_3x3"]] = 1.0
    g = net.genotype()
    assert {op for op, _ in g.normal} == {"sep_conv_5x5"}
    assert {op for op, _ in g.reduce} == {"avg_pool_3x3"}


# ---- validation ---------------------------------------------------------------------
TWO_NODES = [("sep_conv_3x3", 0), ("skip_connect", 1),
             ("max_pool_3x3", 2), ("dil_conv_3x3", 0)]


def test_reference_genotypes_are_valid():
    for g in GENOTYPES.values():
        assert validate_genotype(g) is g


def test_unknown_op_lists_the_valid_names():
    with pytest.raises(GenotypeError, match="unknown op 'sep_conv_9x9'") as e:
        validate_cell([("sep_conv_9x9", 0)] + TWO_NODES[1:], [2, 3])
    assert all(name in str(e.value) for name in OPS)


def test_input_not_yet_computed():
    with pytest.raises(GenotypeError, match="node 3 reads input 3, a node not yet "
                                            "computed; node 3 may read nodes 0 to 2"):
        validate_cell(TWO_NODES[:3] + [("dil_conv_3x3", 3)], [2, 3])
    with pytest.raises(GenotypeError, match="not yet computed"):
        validate_cell(TWO_NODES[:3] + [("dil_conv_3x3", -1)], [2, 3])


def test_node_without_two_inputs():
    msg = "exactly two inputs, but 3 .* give node 3 only one"
    with pytest.raises(GenotypeError, match=msg):
        validate_cell(TWO_NODES[:3], [2, 3])
    with pytest.raises(GenotypeError, match="give node 2 none"):
        validate_cell([], [2])


def test_concat_outside_node_range():
    for concat in ([2, 3, 4], [1, 2], []):
        msg = "outside the node range: the intermediate nodes of this cell are 2 to 3"
        with pytest.raises(GenotypeError, match=msg):
            validate_cell(TWO_NODES, concat)


def test_malformed_pair_and_reduce_part_named():
    with pytest.raises(GenotypeError, match=r"normal\[1\] is 'skip_connect'"):
        validate_cell([("sep_conv_3x3", 0), "skip_connect"], [2])
    bad = DARTS_V2._replace(reduce_concat=[2, 3, 4, 5, 6])
    with pytest.raises(GenotypeError, match="reduce_concat"):
        validate_genotype(bad)
    assert issubclass(GenotypeError, ValueError)


# ---- JSON and log text --------------------------------------------------------------
@pytest.mark.parametrize("name", list(GENOTYPES))
def test_json_round_trip(name, tmp_path):
    g = GENOTYPES[name]
    assert genotype_from_dict(json.loads(json.dumps(genotype_to_dict(g)))) == g
    path = save_genotype(g, tmp_path / f"{name}.json")
    assert json.loads(path.read_text())["normal"][0] == list(g.normal[0])
    assert load_genotype(path) == g


@pytest.mark.parametrize("name", list(GENOTYPES))
def test_log_text_round_trip(name, tmp_path):
    g = GENOTYPES[name]
    assert parse_genotype(repr(g)) == g
    # the paper's code prints the concats as range(...)
    first, last = g.normal_concat[0], g.normal_concat[-1]
    ranged = g._replace(normal_concat=range(first, last + 1))
    if list(ranged.normal_concat) == g.normal_concat:
        assert "range(" in repr(ranged) and parse_genotype(repr(ranged)) == g
    # pasted with a log prefix, a suffix and line breaks, into a file
    text = "12/31 11:59:59 PM genotype = " + repr(g).replace("), (", "),\n (") + " x\n"
    (tmp_path / "log.txt").write_text(text)
    assert load_genotype(tmp_path / "log.txt") == g


def test_parse_accepts_positional_fields_and_module_prefix():
    text = ("genotypes.Genotype([('skip_connect', 0), ('sep_conv_5x5', 1)], [2], "
            "reduce=[('max_pool_3x3', 1), ('max_pool_3x3', 0)], "
            "reduce_concat=range(2, 3))")
    g = parse_genotype(text)
    assert g == Genotype([("skip_connect", 0), ("sep_conv_5x5", 1)], [2],
                         [("max_pool_3x3", 1), ("max_pool_3x3", 0)], [2])


def test_parse_errors_and_no_eval():
    with pytest.raises(GenotypeError, match="no 'Genotype\\(' in the text"):
        parse_genotype("normal=[('sep_conv_3x3', 0)]")
    with pytest.raises(GenotypeError, match="cut off"):
        parse_genotype(repr(DARTS_V2)[:-20])
    with pytest.raises(GenotypeError, match="cannot read \"__import__\\('os'\\)"):
        parse_genotype("Genotype(normal=__import__('os').system('echo pwned'))")
    with pytest.raises(GenotypeError, match="cannot read the Genotype"):
        parse_genotype("Genotype(normal=[('skip_connect' 0)])")
    with pytest.raises(GenotypeError, match="needs normal, normal_concat, reduce, "
                       "reduce_concat; it lacks reduce, reduce_concat$"):
        parse_genotype("Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)], "
                       "normal_concat=[2])")
    with pytest.raises(GenotypeError, match="unknown op 'conv_9x9'"):
        parse_genotype(repr(DARTS_V2).replace("dil_conv_3x3", "conv_9x9"))
    unchecked = parse_genotype(repr(DARTS_V2).replace("dil_conv_3x3", "conv_9x9"),
                               validate=False)
    assert unchecked.normal[-1] == ("conv_9x9", 2)


def test_save_refuses_an_invalid_genotype(tmp_path):
    with pytest.raises(GenotypeError):
        save_genotype(DARTS_V2._replace(normal=DARTS_V2.normal[:-1]),
                      tmp_path / "g.json")
    assert not (tmp_path / "g.json").exists()


# ---- pictures -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["DARTS_V2", "NASNet", "AmoebaNet"])
def test_plot_cell_draws_every_edge(name):
    import matplotlib.pyplot as plt
    from matplotlib.text import Annotation

    g = GENOTYPES[name]
    ax = plot_cell(g.reduce, g.reduce_concat, title=name)
    texts = [t.get_text() for t in ax.texts]
    assert sorted(t for t in texts if t in OPS) == sorted(op for op, _ in g.reduce)
    n = len(g.reduce) // 2
    assert {"$c_{k-2}$", "$c_{k-1}$", "$c_{k}$"} <= set(texts)
    assert {str(i) for i in range(n)} <= set(texts)
    arrows = [t for t in ax.texts if isinstance(t, Annotation)]
    assert len(arrows) == len(g.reduce) + len(g.reduce_concat)
    assert ax.get_title() == name
    plt.close(ax.figure)
    with pytest.raises(GenotypeError):
        plot_cell(g.reduce, [99])


def test_plot_alphas_rows_columns_and_values():
    import matplotlib.pyplot as plt

    alpha = torch.randn(num_edges(3), len(PRIMITIVES), requires_grad=True)
    fig, ax = plt.subplots()
    assert plot_alphas(alpha, ax=ax, title="t") is ax
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == ["0→2", "1→2", "0→3", "1→3", "2→3", "0→4", "1→4", "2→4", "3→4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == PRIMITIVES
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown, F.softmax(alpha, -1).detach().numpy(), rtol=1e-6)
    plt.close(fig)
    with pytest.raises(ValueError, match="num_edges"):
        plot_alphas(torch.zeros(13, len(PRIMITIVES)))
    with pytest.raises(ValueError, match="num_edges"):
        plot_alphas(torch.zeros(14, 5))


# ---- the search cell and network ----------------------------------------------------
def test_exports():
    assert darts_lit.SearchCell is Cell and darts_lit.Network is Network
    assert darts_lit.Genotype is Genotype


@pytest.mark.parametrize("reduction,reduction_prev", [(False, False), (True, False),
                                                      (False, True), (True, True)])
def test_cell_shapes(reduction, reduction_prev):
    size, C = 8, 4
    prev = 2 * size if reduction_prev else size  # c_{k-2} is larger after a reduction
    s0 = torch.randn(2, 5, prev, prev)
    s1 = torch.randn(2, 6, size, size)
    cell = Cell(3, 2, 5, 6, C, reduction, reduction_prev)
    w = F.softmax(torch.randn(num_edges(3), len(PRIMITIVES)), -1)
    out = cell(s0, s1, w)
    half = size // 2 if reduction else size
    assert out.shape == (2, 2 * C, half, half)
    assert len(cell._ops) == num_edges(3) == 9
    strides = [2 if reduction and j < 2 else 1 for i in range(3) for j in range(2 + i)]
    for op, stride in zip(cell._ops, strides, strict=True):
        assert op.primitives[0] == "none" and op._ops[0].stride == stride


@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 8)])
def test_network_forward_shapes(in_channels, size):
    torch.manual_seed(0)
    net = Network(4, 10, 5, in_channels=in_channels)
    assert net.alphas_normal.shape == net.alphas_reduce.shape == (14, len(PRIMITIVES))
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]
    assert net(torch.randn(2, in_channels, size, size)).shape == (2, 10)


def test_network_any_steps_multiplier_and_paper_depth():
    torch.manual_seed(0)
    net = Network(2, 7, 8, steps=3, multiplier=2, stem_multiplier=2, in_channels=1)
    assert net.alphas_normal.shape == (num_edges(3), len(PRIMITIVES)) == (9, 8)
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5]
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 7)


def test_wrong_input_channels_is_a_clear_error():
    net = Network(4, 10, 3, in_channels=1)
    with pytest.raises(ValueError, match=r"shape \[B, 1, H, W\].*got \(2, 3, 8, 8\)"):
        net(torch.randn(2, 3, 8, 8))
    with pytest.raises(ValueError, match="in_channels"):
        net(torch.randn(1, 8, 8))


def test_alpha_init_is_small_and_seeded():
    torch.manual_seed(1)
    a = Network(4, 10, 3, in_channels=1)
    torch.manual_seed(1)
    b = Network(4, 10, 3, in_channels=1)
    for x, y in zip(a.arch_parameters(), b.arch_parameters(), strict=True):
        assert isinstance(x, torch.nn.Parameter) and torch.equal(x, y)
        assert 1e-4 < x.std() < 1e-2
    assert not torch.equal(a.alphas_normal, a.alphas_reduce)


def test_weights_and_arch_parameters_partition_the_parameters():
    net = Network(4, 10, 5, steps=3, in_channels=1)
    w = {id(p) for p in net.weights()}
    a = [id(p) for p in net.arch_parameters()]
    assert a == [id(net.alphas_normal), id(net.alphas_reduce)]
    assert not w & set(a)
    assert w | set(a) == {id(p) for p in net.parameters()}
    assert len(net.weights()) + 2 == len(list(net.parameters()))


def test_every_alpha_gets_a_gradient():
    torch.manual_seed(0)
    net = Network(4, 10, 5, in_channels=1)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 10, (6,))
    loss = net.loss(x, y)
    torch.testing.assert_close(loss, F.cross_entropy(net(x), y))
    loss.backward()
    for a in net.arch_parameters():
        assert a.grad is not None and (a.grad != 0).all()
        # shifting an edge's α changes no softmax, so each row's gradient sums to 0
        torch.testing.assert_close(a.grad.sum(-1), torch.zeros(len(a)), atol=1e-6,
                                   rtol=0)


def test_custom_criterion():
    net = Network(4, 10, 3, criterion=torch.nn.MSELoss(), in_channels=1)
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 10)
    torch.testing.assert_close(net.loss(x, y), F.mse_loss(net(x), y))


def test_functional_call_substitutes_alpha():
    torch.manual_seed(0)
    net = Network(4, 10, 3, in_channels=1)
    x = torch.randn(4, 1, 8, 8)
    params = dict(net.named_parameters())
    new_normal = torch.randn_like(net.alphas_normal)
    params["alphas_normal"] = new_normal
    out = torch.func.functional_call(net, params, (x,))
    assert not torch.allclose(out, net(x))
    with torch.no_grad():
        net.alphas_normal.copy_(new_normal)
    torch.testing.assert_close(out, net(x))


# ---- the parameter count ------------------------------------------------------------
def mixed_op_params(C: int, stride: int) -> int:
    """Parameters of one search edge, from the op formulas (non-affine BatchNorm)."""
    sep = lambda k: 2 * (C * k * k + C * C)  # two (depthwise k×k + pointwise) blocks
    dil = lambda k: C * k * k + C * C        # one dilated depthwise + pointwise
    skip = C * C if stride == 2 else 0       # FactorizedReduce: two C×C/2 1×1 convs
    return sep(3) + sep(5) + dil(3) + dil(5) + skip  # none and pooling: 0


def search_network_params(C, num_classes, layers, steps=4, multiplier=4,
                          stem_multiplier=3, in_channels=3) -> tuple[int, int]:
    """(weights, architecture parameters) of a search network, in closed form."""
    c_stem = stem_multiplier * C
    total = in_channels * 9 * c_stem + 2 * c_stem  # 3×3 conv, affine BatchNorm
    cpp, cp, c = c_stem, c_stem, C
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c = 2 * c if reduction else c
        total += cpp * c + cp * c  # both preprocessings are C_in × C 1×1 convs
        total += sum(mixed_op_params(c, 2 if reduction and j < 2 else 1)
                     for i_ in range(steps) for j in range(2 + i_))
        cpp, cp = cp, multiplier * c
    total += cp * num_classes + num_classes
    return total, 2 * num_edges(steps) * len(PRIMITIVES)


@pytest.mark.parametrize("args", [
    dict(C=4, num_classes=10, layers=5, in_channels=1),
    dict(C=16, num_classes=10, layers=8),
    dict(C=6, num_classes=3, layers=4, steps=3, multiplier=2, stem_multiplier=2,
         in_channels=2),
])
def test_parameter_count_closed_form(args):
    net = Network(**args)
    weights, arch = search_network_params(**args)
    assert sum(p.numel() for p in net.weights()) == weights
    assert sum(p.numel() for p in net.arch_parameters()) == arch


def test_parameter_count_printed_by_the_chapter():
    # the checked output of book/05_model_search.md at its default parameters
    assert search_network_params(4, 10, 5, in_channels=1) == (135966, 224)


def test_mixed_op_formula_matches_module():
    from darts_lit.cnn.mixed_op import MixedOp
    from darts_lit.cnn.ops import count_parameters

    for C in (4, 6):
        for stride in (1, 2):
            assert count_parameters(MixedOp(C, stride)) == mixed_op_params(C, stride)


def test_genotypes_module_has_the_tools():
    for name in ("validate_cell", "validate_genotype", "genotype_to_dict",
                 "genotype_from_dict", "parse_genotype", "save_genotype",
                 "load_genotype", "GenotypeError"):
        assert name in G.__all__
    from darts_lit.cnn import cell_figures
    assert {"plot_cell", "plot_alphas"} <= set(cell_figures.__all__)


def test_a_float64_network_derives_its_genotype_in_float64():
    """`none` 200 above the rest on every edge: the other ops' weights (about 1e-87)
    exist in float64 only. The genotype follows a float64 softmax computed here with
    math.exp, edge by edge, by the paper's rule; in float32 every candidate is 0."""
    import math

    torch.manual_seed(0)
    net = Network(2, 10, 3, steps=2, multiplier=2).double()
    with torch.no_grad():
        for a in (net.alphas_normal, net.alphas_reduce):
            a.copy_(torch.rand_like(a))
            a[:, PRIMITIVES.index("none")] = 200.0

    def by_rule(alpha):  # softmax in Python floats (float64), then the paper's rule
        rows = alpha.tolist()
        w = [[math.exp(x - max(r)) / sum(math.exp(y - max(r)) for y in r) for x in r]
             for r in rows]
        ops = [o for o in range(len(PRIMITIVES)) if PRIMITIVES[o] != "none"]
        gene, start = [], 0
        for i in range(2):
            edges = w[start:start + i + 2]
            strength = [max(e[o] for o in ops) for e in edges]
            for j in sorted(range(i + 2), key=lambda j: -strength[j])[:2]:
                gene.append((PRIMITIVES[max(ops, key=edges[j].__getitem__)], j))
            start += i + 2
        return gene

    g = net.genotype()
    assert g.normal == by_rule(net.alphas_normal)
    assert g.reduce == by_rule(net.alphas_reduce)
    assert min(min(r) for r in F.softmax(net.alphas_normal, -1).tolist()) > 0.0
    assert F.softmax(net.alphas_normal.float(), -1)[:, 1:].max() == 0.0  # float32: ties
    assert derive_cell(net.alphas_normal.float(), 2) != g.normal
