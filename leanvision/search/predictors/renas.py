"""ReNAS's cell tensors, LeNet predictor and pairwise ranking loss (Xu et al., arXiv 1910.01523), on NAS-Bench-201.

The paper encodes a NAS-Bench-101 cell as a stack of matrices over its node DAG (a type matrix and per-stage FLOPs
and parameter matrices) and trains a small CNN to *rank* cells with a pairwise logistic loss. On NAS-Bench-201
(arXiv 2001.00326) the ops sit on edges, so each edge becomes an op node: 8 nodes ``[input, e(0→1), e(0→2),
e(1→2), e(0→3), e(1→3), e(2→3), output]`` (the order of :data:`~leanvision.search.spaces.nasbench201.EDGES`).
The op node of edge i→j reads the op nodes of the edges into node i (the input node when i = 0) and feeds the op
nodes of the edges out of node j (the output node when j = 3). This adjacency A is the same for every cell: a
``none`` op node keeps its edges, carries the type ``none`` and costs nothing, so a cell's tensor differs from
another's only in its types and costs (dropping a ``none`` node's edges would repeat what its type already says).

Channels of the (7, 8, 8) tensor: 0 = the type matrix T = A ⊙ the type code of the edge's *destination* node
(``T[u, v] = A[u, v] · t[v]``; the paper leaves the end open, so the input node's code never appears); 1-3 = MACs
and 4-6 = parameters of each node at the three stages (width C, 2C, 4C at resolution, /2, /4), broadcast the same
way. MACs and parameters per op follow :func:`~leanvision.search.spaces.nasbench201.params_macs` (ReLU-Conv-BN
convs; pooling, skip and ``none`` cost nothing). Since the width doubles while the area quarters, the three MACs
channels are equal; they are kept so the tensor has the paper's layout.

Deviations from the official code (``huawei-noah/Efficient-Computing`` @ 1a4e5b90, ``Efficient-NAS/ReNAS``): the
optimizer steps after the gradient of the same batch (the official code steps once more, stale, at each epoch's
start), the model of the last epoch is kept (the official code picks the epoch with the best *training* Kendall τ),
and the pair mask lives on the scores' device (the official one calls ``.cuda()``).

The default encoding here is not the paper's: ``encoding="onehot"`` (:func:`encode_onehot`) is each edge's op one-hot
(``none`` for an edge whose output cannot reach the cell's output) plus one flag per edge saying whether it lies on an
input->output path of non-``none`` edges, scored by a small MLP
(:class:`ReNASMLP`) with the same pairwise loss; it ranks NAS-Bench-201 cells better than the paper's tensor with
the LeNet. ``encoding="paper"`` keeps the tensor above.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from leanvision.errors import ConfigError
from leanvision.search.spaces.nasbench201 import _OP_MACS_PER_PIXEL, _OP_PARAMS, EDGES, OPS, cell_ops

NODES = ("input", *(f"e({e[-1]}->{e[0]})" for e in EDGES), "output")
# 0 is kept for "no edge" in every matrix, so every node type has a nonzero code.
TYPE_CODES = {"input": 1, "none": 2, "skip_connect": 3, "nor_conv_1x1": 4, "nor_conv_3x3": 5, "avg_pool_3x3": 6,
              "output": 7}  # fmt: skip
CHANNELS = ("type", "macs stage 1", "macs stage 2", "macs stage 3",
            "params stage 1", "params stage 2", "params stage 3")  # fmt: skip
FEATURES = {"full": 7, "type": 1}  # channels the predictor sees: the whole tensor, or the type matrix only
LOSSES = ("pairwise", "mse")
ENCODINGS = ("onehot", "paper")
ONEHOT_DIM = len(EDGES) * len(OPS) + len(EDGES)  # one-hot op per edge, then one live flag per edge


def live_edges(sample: Mapping[str, str] | str) -> list[bool]:
    """Per edge (``EDGES`` order), whether it lies on an input->output path whose edges are all non-``none``."""
    ops = cell_ops(sample)
    on = {e: ops[e] != "none" for e in EDGES}
    fwd = {0}  # nodes reached from the input
    for j in (1, 2, 3):
        if any(i in fwd and on[f"{j}<-{i}"] for i in range(j)):
            fwd.add(j)
    back = {3}  # nodes that reach the output
    for i in (2, 1, 0):
        if any(j in back and on[f"{j}<-{i}"] for j in range(i + 1, 4)):
            back.add(i)
    return [on[e] and int(e[-1]) in fwd and int(e[0]) in back for e in EDGES]


def encode_onehot(samples: Iterable[Mapping[str, str] | str], *, effective: bool = True) -> np.ndarray:
    """The (n, 36) float32 one-hot + live-edge features of NAS-Bench-201 samples or arch strings.

    With ``effective`` an edge on no live input->output path is one-hot encoded as ``none``: its output never
    reaches the cell's output (the isomorphism rule of ``canonical_archs``), and encoding the op it names only adds
    noise for the predictor (measured in docs/search.md).
    """
    rows = []
    for ops in map(cell_ops, samples):
        row = np.zeros(ONEHOT_DIM, np.float32)
        live = live_edges(ops)
        for k, e in enumerate(EDGES):
            row[k * len(OPS) + OPS.index(ops[e] if live[k] or not effective else "none")] = 1
        row[len(EDGES) * len(OPS) :] = live
        rows.append(row)
    return np.stack(rows) if rows else np.zeros((0, ONEHOT_DIM), np.float32)


@functools.lru_cache(maxsize=1)
def nb201_onehot() -> np.ndarray:
    """One-hot + live-edge features of all 15,625 cells, row k = the cell with ``tabular.arch_code`` k."""
    codes = np.arange(len(OPS) ** len(EDGES))[:, None] // len(OPS) ** np.arange(len(EDGES)) % len(OPS)
    out = encode_onehot({e: OPS[d] for e, d in zip(EDGES, row, strict=True)} for row in codes)
    out.flags.writeable = False
    return out


def _adjacency() -> np.ndarray:
    node = {e: k + 1 for k, e in enumerate(EDGES)}  # edge "j<-i" -> its op node
    a = np.zeros((len(NODES), len(NODES)), np.float32)
    for e, v in node.items():
        j, i = int(e[0]), int(e[-1])
        for u in [node[f] for f in EDGES if int(f[0]) == i] or [0]:  # nothing enters node 0: the input node
            a[u, v] = 1
        for w in [node[f] for f in EDGES if int(f[-1]) == j] or [len(NODES) - 1]:  # nothing leaves 3: the output
            a[v, w] = 1
    a.flags.writeable = False
    return a


ADJACENCY = _adjacency()


def _check_geometry(C: int, resolution: int) -> None:
    if not isinstance(C, int) or C < 1:
        raise ConfigError(f"ReNAS encoding: C must be an integer >= 1, got {C!r}")
    if not isinstance(resolution, int) or resolution < 4 or resolution % 4:
        raise ConfigError(f"ReNAS encoding: resolution must be a positive multiple of 4 (two stride-2 reductions), "
                          f"got {resolution!r}")  # fmt: skip


def _encode(op_index: np.ndarray, C: int, resolution: int) -> np.ndarray:
    """Tensors of cells given as rows of op indices into ``OPS``, one per edge in ``EDGES`` order."""
    n = len(op_index)
    per_node = np.zeros((n, len(NODES)), np.float64)

    def channel(per_op: Sequence[float], ends: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        per_node[:, 0], per_node[:, -1] = ends
        per_node[:, 1:-1] = np.asarray(per_op, np.float64)[op_index]
        return ADJACENCY * per_node[:, None, :]  # row u, column v: edge u -> v carries the value of v

    out = np.zeros((n, len(CHANNELS), len(NODES), len(NODES)), np.float32)
    out[:, 0] = channel([TYPE_CODES[o] for o in OPS], (TYPE_CODES["input"], TYPE_CODES["output"]))
    for s in range(3):
        c, hw = C * 2**s, (resolution // 2**s) ** 2
        out[:, 1 + s] = channel([_OP_MACS_PER_PIXEL[o](c) * hw if o in _OP_MACS_PER_PIXEL else 0 for o in OPS])
        out[:, 4 + s] = channel([_OP_PARAMS[o](c) if o in _OP_PARAMS else 0 for o in OPS])
    return out


def encode_cells(samples: Iterable[Mapping[str, str] | str], *, C: int = 16, resolution: int = 32) -> np.ndarray:
    """The (n, 7, 8, 8) float32 ReNAS tensors (arXiv 1910.01523) of NAS-Bench-201 samples or arch strings."""
    _check_geometry(C, resolution)
    rows = [[OPS.index(ops[e]) for e in EDGES] for ops in map(cell_ops, samples)]
    return _encode(np.asarray(rows, np.int64).reshape(-1, len(EDGES)), C, resolution)


def encode_cell(sample_or_arch: Mapping[str, str] | str, *, C: int = 16, resolution: int = 32) -> np.ndarray:
    """The (7, 8, 8) ReNAS tensor (arXiv 1910.01523) of one NAS-Bench-201 cell (see the module docstring)."""
    return encode_cells([sample_or_arch], C=C, resolution=resolution)[0]


@functools.lru_cache(maxsize=2)
def nb201_encodings(C: int = 16, resolution: int = 32) -> np.ndarray:
    """Tensors of all 15,625 cells, row k = the cell with ``tabular.arch_code`` k (computed once per process)."""
    _check_geometry(C, resolution)
    codes = np.arange(len(OPS) ** len(EDGES))[:, None]
    out = _encode(codes // len(OPS) ** np.arange(len(EDGES)) % len(OPS), C, resolution)
    out.flags.writeable = False  # shared by every caller
    return out


class ReNASPredictor(nn.Module):
    """The official ReNAS LeNet (arXiv 1910.01523): two Conv-BN-ReLU, three linear layers, one score per cell."""

    def __init__(self, in_channels: int = 7, size: int = len(NODES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 38, 3, padding=1, bias=False), nn.BatchNorm2d(38), nn.ReLU(),
            nn.Conv2d(38, 128, 3, padding=1, bias=False), nn.BatchNorm2d(128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(128 * size * size, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(1)


class ReNASMLP(nn.Module):
    """An MLP scoring one-hot + live-edge features (:func:`encode_onehot`): two hidden ReLU layers, one score."""

    def __init__(self, in_features: int = ONEHOT_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 1))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x).squeeze(1)


def pairwise_ranking_loss(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ReNAS's loss (arXiv 1910.01523): mean over ordered pairs i ≠ j of log(1 + exp(−(s_i − s_j)·sign(y_i − y_j))).

    A tied pair has sign 0 and contributes log 2 whatever the scores.
    """
    s, y = scores.reshape(-1), labels.reshape(-1)
    n = s.numel()
    if n < 2 or y.numel() != n:
        raise ConfigError(f"pairwise ranking loss: need >= 2 scores and as many labels, got {n} and {y.numel()}")
    margin = (s[:, None] - s[None, :]) * torch.sign(y[:, None] - y[None, :]).to(s.dtype)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=s.device)
    return F.softplus(-margin)[off_diagonal].mean()  # softplus(x) = log(1 + exp(x)), stable for large |x|


def _features(X: np.ndarray, features: str) -> np.ndarray:
    if features not in FEATURES:
        raise ConfigError(f"ReNAS features must be one of {', '.join(FEATURES)}, got {features!r}")
    X = np.asarray(X, np.float32)
    if X.ndim == 2 and X.shape[1] == ONEHOT_DIM:  # encode_onehot's features: always all of them
        return X
    if X.ndim != 4 or X.shape[1:] != (len(CHANNELS), len(NODES), len(NODES)):
        raise ConfigError(f"ReNAS input must have shape (n, 7, 8, 8) (see encode_cells) or (n, {ONEHOT_DIM}) (see "
                          f"encode_onehot), got {X.shape}")  # fmt: skip
    return X[:, : FEATURES[features]]


class FittedPredictor:
    """A trained :class:`ReNASPredictor` or :class:`ReNASMLP` with its train-fitted scaler; scores are ordinal."""

    def __init__(self, net: nn.Module, scaler, features: str, loss: str) -> None:
        self.net, self.scaler, self.features, self.loss = net.eval(), scaler, features, loss

    def predict(self, X: np.ndarray, *, chunk: int = 4096) -> np.ndarray:
        """Scores (higher = better) of the cells' encodings ``X``, as float64."""
        x = _features(X, self.features)
        out = []
        with torch.inference_mode():
            for k in range(0, len(x), chunk):
                part = x[k : k + chunk]
                flat = self.scaler.transform(part.reshape(len(part), -1)).astype(np.float32)
                out.append(self.net(torch.from_numpy(flat.reshape(part.shape))).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    parts = list(order.split(batch_size))
    if len(parts) > 1 and len(parts[-1]) < 2:  # BatchNorm and pairs need >= 2 cells per batch
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def fit_predictor(X: np.ndarray, y: Sequence[float] | np.ndarray, *, loss: str = "pairwise", epochs: int = 200,
                  lr: float = 1e-3, batch_size: int = 1024, seed: int = 0,
                  features: str = "full") -> FittedPredictor:  # fmt: skip
    """Train ReNAS's predictor (arXiv 1910.01523) on cell encodings ``X`` and accuracies ``y``; deterministic per seed.

    ``X`` from :func:`encode_cells` (the paper's tensors) trains the LeNet, from :func:`encode_onehot` the MLP.

    Inputs are standardised per feature with statistics of these (train) cells only, labels min-max scaled with
    their min and max; Adam (``lr``, no weight decay) on the pairwise ranking loss or MSE, ``epochs`` passes in
    shuffled batches of ``batch_size`` (one full batch when n <= batch_size, as in the paper); the last epoch's
    model is returned. ``features="type"`` feeds the type matrix only (the feature ablation).
    """
    from sklearn.preprocessing import StandardScaler

    if loss not in LOSSES:
        raise ConfigError(f"ReNAS loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    for name, v in (("epochs", epochs), ("batch_size", batch_size)):
        if not isinstance(v, int) or v < (1 if name == "epochs" else 2):
            raise ConfigError(f"ReNAS {name} must be an integer >= {1 if name == 'epochs' else 2}, got {v!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ConfigError(f"ReNAS lr must be a positive number, got {lr!r}")
    x = _features(X, features)
    labels = np.asarray(y, np.float64).reshape(-1)
    if len(x) < 2 or len(labels) != len(x) or not np.isfinite(labels).all():
        raise ConfigError(f"ReNAS needs >= 2 training cells with a finite label each, got {len(x)} cells and "
                          f"{len(labels)} labels")  # fmt: skip
    scaler = StandardScaler().fit(x.reshape(len(x), -1))
    xt = torch.from_numpy(scaler.transform(x.reshape(len(x), -1)).astype(np.float32).reshape(x.shape))
    span = labels.max() - labels.min()
    yt = torch.from_numpy((labels - labels.min()) / (span if span > 0 else 1.0)).float()
    criterion = pairwise_ranking_loss if loss == "pairwise" else F.mse_loss
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's generator
        torch.manual_seed(seed)
        net = ReNASMLP(x.shape[1]) if x.ndim == 2 else ReNASPredictor(in_channels=x.shape[1])
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=0.0)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen) if len(xt) > batch_size else torch.arange(len(xt))
        for idx in _batches(order, batch_size):
            opt.zero_grad()
            criterion(net(xt[idx]), yt[idx]).backward()
            opt.step()
    return FittedPredictor(net, scaler, features, loss)


def kendall_tau(pred: Sequence[float] | np.ndarray, truth: Sequence[float] | np.ndarray) -> float:
    """Kendall's τ-b between predicted scores and true accuracies (``scipy.stats.kendalltau``)."""
    from scipy.stats import kendalltau

    p, t = np.asarray(pred, np.float64).reshape(-1), np.asarray(truth, np.float64).reshape(-1)
    if len(p) != len(t) or len(p) < 2:
        raise ConfigError(f"kendall_tau: need two sequences of the same length >= 2, got {len(p)} and {len(t)}")
    return float(kendalltau(p, t).statistic)
