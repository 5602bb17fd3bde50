"""darts_lit: a literate, tested and fast DARTS with FBNet's latency objective.

The modules are generated from the chapters of the book (see each module's header); this
file only re-exports the public names, and imports every chapter that plugs into a seam
of an earlier one (kinds of run, their figures, remedies, spaces, hooks). The functions
`search` and `train` stay in their modules (`from darts_lit.cnn.search import search`,
`from darts_lit.evaluation.train import train`): re-exported here, they would hide the
modules of the same name.
"""

__version__ = "0.1.0"

# later chapters that plug into seams of earlier ones: the search's remedies and spaces
# (cnn.search.register_remedy), the collapse figure (core.utils.register_hook)
from darts_lit.cli import outputs  # noqa: F401  (the figures of train, rnn and fbnet runs)
from darts_lit.cnn import (  # noqa: F401  (the remedies and figures of the search)
    collapse,
    collapse_figures,
    early_stop,
    search_figures,
    single_level,
    smoothing,
)
from darts_lit.cnn.architect import Architect, arch_gradient  # noqa: F401
from darts_lit.cnn.cell_figures import plot_alphas, plot_cell  # noqa: F401
from darts_lit.cnn.genotypes import (  # noqa: F401
    DARTS,
    DARTS_V1,
    DARTS_V2,
    GENOTYPES,
    Genotype,
    GenotypeError,
    load_genotype,
    parse_genotype,
    save_genotype,
)
from darts_lit.cnn.mixed_op import MixedOp  # noqa: F401
from darts_lit.cnn.model_search import Cell as SearchCell  # noqa: F401
from darts_lit.cnn.model_search import Network, derive_cell  # noqa: F401
from darts_lit.cnn.ops import OPS, PRIMITIVES, count_parameters, make_op  # noqa: F401
from darts_lit.cnn.search import SearchConfig  # noqa: F401
from darts_lit.core.data import DatasetInfo, get_dataset, search_loaders  # noqa: F401
from darts_lit.core.folder_data import read_folder  # noqa: F401  (registers "folder")
from darts_lit.core.imagenet_cifar100 import read_imagenet  # noqa: F401  (registers two)
from darts_lit.evaluation.model import NetworkCIFAR, NetworkImageNet, count_macs  # noqa: F401
from darts_lit.evaluation.recipe import TrainConfig  # noqa: F401
from darts_lit.evaluation.train import evaluate_checkpoint  # noqa: F401
from darts_lit.fbnet import runtimes  # noqa: F401  (TorchScript, ONNX Runtime tables)
from darts_lit.fbnet.search import FBNetSearchConfig, search_fbnet  # noqa: F401
from darts_lit.fbnet.space import FBNetSpace, FBNetSupernet, fbnet_network  # noqa: F401
from darts_lit.fbnet.train import FBNetTrainConfig, train_fbnet  # noqa: F401
from darts_lit.latency.darts import latency_objective  # noqa: F401
from darts_lit.latency.table import LatencyTable  # noqa: F401

# later chapters that plug into seams of earlier ones (core.utils.register_hook): the
# fast search cell, the fast evaluation cell and recomputed cells
from darts_lit.perf import fast_cell, fast_model, recompute  # noqa: F401
from darts_lit.perf.pc_darts import PCNetwork  # noqa: F401
from darts_lit.rnn.model import RNN_GENOTYPES, RNNGenotype, RNNModel, RNNModelSearch  # noqa: F401
from darts_lit.rnn.search import RNNSearchConfig, search_rnn  # noqa: F401
from darts_lit.rnn.train import RNNTrainConfig, train_rnn  # noqa: F401
