"""Unit tests of darts_lit.evaluation.model: evaluation cells, networks, drop path and
counting."""

import pytest
import torch
from torch import nn

from darts_lit.cnn.genotypes import DARTS_V1, DARTS_V2, GENOTYPES, Genotype
from darts_lit.cnn.ops import count_parameters
from darts_lit.evaluation.model import (
    AuxiliaryHeadCIFAR,
    Cell,
    NetworkCIFAR,
    NetworkImageNet,
    count_macs,
    drop_path,
)

# A small hand-made genotype touching every parametrised op kind, with normal and
# reduction cells of different widths (3 and 2 concatenated nodes).
HAND = Genotype(
    normal=[("sep_conv_3x3", 0), ("dil_conv_5x5", 1),
            ("skip_connect", 0), ("avg_pool_3x3", 2),
            ("conv_7x1_1x7", 3), ("sep_conv_5x5", 1)],
    normal_concat=[2, 3, 4],
    reduce=[("skip_connect", 0), ("max_pool_3x3", 1),
            ("sep_conv_5x5", 2), ("skip_connect", 1)],
    reduce_concat=[2, 3],
)


# ---- closed forms, written from the op formulas, not from the modules ---------------
def sep(C, k):
    return 2 * (C * k * k + C * C + 2 * C)


def dil(C, k):
    return C * k * k + C * C + 2 * C


def fact_reduce(C_in, C_out):
    return 2 * C_in * (C_out // 2) + 2 * C_out


def relu_conv_bn(C_in, C_out):
    return C_in * C_out + 2 * C_out


def hand_cell_ops(C, reduction):
    if reduction:  # skip@0 and skip@1 have stride 2: two FactorizedReduce; pool: 0
        return 2 * fact_reduce(C, C) + sep(C, 5)
    return sep(C, 3) + dil(C, 5) + (2 * 7 * C * C + 2 * C) + sep(C, 5)


def hand_cells(C, layers, C_pp, C_p, reduction_prev):
    """Parameters of the cells, final channels and the auxiliary head's channels."""
    total, C_aux = 0, None
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        C = 2 * C if reduction else C
        pre0 = fact_reduce(C_pp, C) if reduction_prev else relu_conv_bn(C_pp, C)
        total += pre0 + relu_conv_bn(C_p, C) + hand_cell_ops(C, reduction)
        C_pp, C_p = C_p, (2 if reduction else 3) * C
        reduction_prev = reduction
        if i == 2 * layers // 3:
            C_aux = C_p
    return total, C_p, C_aux


def aux_head(C_aux, classes, last_bn):
    return (C_aux * 128 + 2 * 128 + 128 * 768 * 2 * 2 + (2 * 768 if last_bn else 0)
            + 768 * classes + classes)


@pytest.mark.parametrize("C,layers,classes,in_ch", [(4, 3, 10, 3), (6, 7, 5, 1)])
def test_cifar_parameter_count_closed_form(C, layers, classes, in_ch):
    cells, C_last, C_aux = hand_cells(C, layers, 3 * C, 3 * C, False)
    stem = in_ch * 3 * C * 9 + 2 * 3 * C
    expected = stem + cells + C_last * classes + classes
    net = NetworkCIFAR(C, classes, layers, True, HAND, in_channels=in_ch)
    assert count_parameters(net) == expected
    assert count_parameters(net, auxiliary=True) == expected + aux_head(C_aux, classes,
                                                                        last_bn=True)
    assert count_parameters(NetworkCIFAR(C, classes, layers, False, HAND, in_ch)) == (
        expected)


def test_imagenet_parameter_count_closed_form():
    C, layers, classes = 8, 4, 7
    cells, C_last, C_aux = hand_cells(C, layers, C, C, True)
    stem0 = 3 * (C // 2) * 9 + 2 * (C // 2) + (C // 2) * C * 9 + 2 * C
    stem1 = C * C * 9 + 2 * C
    expected = stem0 + stem1 + cells + C_last * classes + classes
    net = NetworkImageNet(C, classes, layers, True, HAND)
    assert count_parameters(net) == expected
    assert count_parameters(net, auxiliary=True) == expected + aux_head(C_aux, classes,
                                                                        last_bn=False)


def test_darts_v2_cifar_count_equals_paper_code():
    """The paper's code logs `param size = 3.349342MB` for this network."""
    with torch.device("meta"):
        net = NetworkCIFAR(36, 10, 20, auxiliary=True, genotype=DARTS_V2)
    assert count_parameters(net) == 3_349_342


# ---- shapes and return types ----------------------------------------------------
@pytest.mark.parametrize("name", sorted(GENOTYPES))
def test_every_reference_genotype_builds_and_runs(name):
    torch.manual_seed(0)
    g = GENOTYPES[name]
    net = NetworkCIFAR(4, 10, 3, True, g)
    logits, logits_aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == logits_aux.shape == (2, 10)
    inet = NetworkImageNet(4, 11, 3, True, g).eval()
    assert inet(torch.randn(1, 3, 64, 64)).shape == (1, 11)


def test_return_types_in_train_and_eval_modes():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    net = NetworkCIFAR(4, 10, 5, auxiliary=True, genotype=DARTS_V2)
    net.drop_path_prob = 0.3
    out = net.train()(x)
    assert isinstance(out, tuple) and len(out) == 2
    assert all(isinstance(o, torch.Tensor) and o.shape == (3, 10) for o in out)
    assert isinstance(net.eval()(x), torch.Tensor) and net(x).shape == (3, 10)
    plain = NetworkCIFAR(4, 10, 5, auxiliary=False, genotype=DARTS_V2)
    assert isinstance(plain.train()(x), torch.Tensor)
    assert isinstance(plain.eval()(x), torch.Tensor)


def test_digits_sized_network_with_auxiliary_head():
    """8×8 1-channel input: the auxiliary head sees 2×2 maps and still works."""
    torch.manual_seed(0)
    net = NetworkCIFAR(4, 10, 5, True, DARTS_V1, in_channels=1)
    logits, logits_aux = net(torch.randn(4, 1, 8, 8))
    assert logits.shape == logits_aux.shape == (4, 10)
    (logits.sum() + logits_aux.sum()).backward()
    assert net.auxiliary_head.classifier.weight.grad is not None


def test_auxiliary_head_is_the_papers_at_8x8():
    torch.manual_seed(0)
    head = AuxiliaryHeadCIFAR(6, 10).eval()
    ref = nn.Sequential(*head.features)  # the paper's head: plain sequential
    x = torch.randn(2, 6, 8, 8)
    torch.testing.assert_close(head(x), head.classifier(ref(x).flatten(1)))


def test_imagenet_224_feature_sizes():
    """At 224×224 the auxiliary head receives the 7×7 maps its pooling was made for."""
    seen = {}
    with torch.device("meta"):
        net = NetworkImageNet(8, 10, 6, True, DARTS_V2)

    def record(name):
        def hook(module, args):
            seen[name] = tuple(args[0].shape[-2:])
        return hook

    net.auxiliary_head.register_forward_pre_hook(record("aux"))
    net.global_pooling.register_forward_pre_hook(record("final"))
    net.train()(torch.zeros(1, 3, 224, 224, device="meta"))
    assert seen == {"aux": (7, 7), "final": (7, 7)}


def test_layers_must_allow_two_reductions():
    with pytest.raises(ValueError, match="at least 3"):
        NetworkCIFAR(4, 10, 2, False, DARTS_V2)


# ---- drop path -------------------------------------------------------------------
def test_drop_path_preserves_expected_value():
    torch.manual_seed(0)
    n, p = 40_000, 0.2
    h = torch.randn(1, 2, 3, 3, dtype=torch.float64).expand(n, -1, -1, -1)
    out = drop_path(h, p)
    kept = out.flatten(1).ne(0).all(1)
    assert (kept | out.flatten(1).eq(0).all(1)).all()  # per-sample mask
    torch.testing.assert_close(out[kept], h[kept] / (1 - p))
    assert abs(kept.double().mean().item() - (1 - p)) < 4 * (p * (1 - p) / n) ** 0.5
    sd = (p / (1 - p)) ** 0.5 * h[0].abs() / n**0.5
    assert ((out.mean(0) - h[0]).abs() < 4 * sd + 1e-12).all()
    assert out.dtype == torch.float64


def test_drop_path_zero_probability_is_identity():
    x = torch.randn(5, 3, 4, 4)
    assert drop_path(x, 0.0) is x
    assert torch.equal(drop_path(x, 0.0), x)
    with pytest.raises(ValueError):
        drop_path(x, 1.0)


def test_drop_path_spares_identity_and_acts_in_training_only():
    torch.manual_seed(0)
    skips = Genotype(normal=[("skip_connect", 0), ("skip_connect", 1)] * 2,
                     normal_concat=[2, 3], reduce=[], reduce_concat=[])
    cell = Cell(skips, 4, 4, 4, reduction=False, reduction_prev=False).train()
    s0, s1 = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(cell(s0, s1, 0.9), cell(s0, s1, 0.0))  # identities only
    conv = Cell(DARTS_V2, 4, 4, 4, reduction=False, reduction_prev=False).train()
    torch.manual_seed(1)
    a = conv(s0, s1, 0.5)
    assert not torch.allclose(a, conv(s0, s1, 0.0))
    conv.eval()
    torch.testing.assert_close(conv(s0, s1, 0.5), conv(s0, s1, 0.0))


# ---- counting ----------------------------------------------------------------------
def test_count_macs_of_known_layers_and_mode_restored():
    net = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5),
                        nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, 4))
    net.train()
    assert count_macs(net, (2, 6, 6)) == 5 * 6 * 6 * 2 * 9 + 5 * 6 * 6 * 4
    assert net.training


def test_count_macs_excludes_auxiliary_head():
    torch.manual_seed(0)
    with_aux = NetworkCIFAR(4, 10, 5, True, DARTS_V2)
    without = NetworkCIFAR(4, 10, 5, False, DARTS_V2)
    assert count_macs(with_aux, (3, 16, 16)) == count_macs(without, (3, 16, 16)) > 0
