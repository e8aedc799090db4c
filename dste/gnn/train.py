"""Full-batch FP32 training with Adam and early stopping on validation accuracy (or loss: ``keep="loss"``), and
its distilled variant: a model trained also to match an ensemble of independently trained teachers on every node."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from dste.checks import flag, integer, real_number

from .models import SEED_RANGE, make_model

__all__ = [
    "train_fp32", "train_fp32_distilled", "train_fp32_on_snapshots", "train_new_fp32_model", "teacher_seeds",
    "accuracy", "graph_tensors", "training_tensors", "KEEP_CRITERIA", "SPARSE_INPUT_MIN_VALUES",
    "SPARSE_INPUT_MAX_DENSITY",
]

KEEP_CRITERIA = ("accuracy", "loss")
"""Which validation epoch the trainers keep: the best validation accuracy (ties: lower validation loss; the
default, every table of the README) or the lowest validation loss (the GCN paper's early-stopping signal)."""


GRAPH_FIELDS = ("adj", "x", "y", "train_mask", "val_mask", "test_mask", "num_classes")
"""What the trainers read of a ``dste.data.Graph``."""


def check_graph(graph, fields=GRAPH_FIELDS) -> None:
    """``TypeError`` unless ``graph`` has ``fields`` (a ``dste.data.Graph`` has them all), naming the first missing."""
    for name in fields:
        if not hasattr(graph, name):
            raise TypeError(f"graph must be a dste.data.Graph (missing .{name}), got {type(graph).__name__}")


def graph_tensors(graph):
    """``(x float32 tensor, y int64 tensor)`` of a ``dste.data.Graph`` (validated)."""
    check_graph(graph)
    return torch.from_numpy(np.ascontiguousarray(graph.x, dtype=np.float32)), torch.from_numpy(graph.y)


SPARSE_INPUT_MIN_VALUES = 1 << 25
SPARSE_INPUT_MAX_DENSITY = 0.05
"""The trainers hand the model its node features as a sparse COO tensor where they hold at least this many values
(nodes x features; 33.5 M, as Coauthor CS's 18,333 x 6,805 bag of words holds 125 M) and at most this share of them
is nonzero. Input dropout then draws over the nonzeros only and the first weight product touches only them: an
epoch on a CS-sized input took 2.7 s dense, three quarters of it drawing the dropout mask over 125 M values, and
takes about 30 ms sparse. Below the size the dense path stays, so every recorded table replays bit for bit: the two
paths draw their dropout masks from different random streams (the same distribution on the nonzeros; a dropped zero
is zero either way)."""


def training_tensors(graph):
    """:func:`graph_tensors`, with ``x`` a coalesced sparse COO tensor where it is as large and as sparse as
    ``SPARSE_INPUT_MIN_VALUES`` and ``SPARSE_INPUT_MAX_DENSITY`` say (the models take either)."""
    x, y = graph_tensors(graph)
    values = x.numel()
    if values >= SPARSE_INPUT_MIN_VALUES and torch.count_nonzero(x) <= SPARSE_INPUT_MAX_DENSITY * values:
        x = x.to_sparse().coalesce()
    return x, y


def accuracy(logits: torch.Tensor, graph, split: str = "test") -> float:
    """Fraction of nodes of ``split`` (train / val / test) whose argmax logit is the label; ``logits`` a float tensor
    ``[num_nodes, num_classes]`` of finite values (a NaN row's argmax is an arbitrary class, a single column's always
    class 0: either scored as chance without a word)."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    check_graph(graph, ("y", f"{split}_mask", "num_classes"))
    mask = torch.from_numpy(getattr(graph, f"{split}_mask"))
    expected = (int(mask.shape[0]), int(graph.num_classes))
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits must be a torch tensor [num_nodes, num_classes] = {list(expected)}, got "
                        f"{type(logits).__name__}")
    if tuple(logits.shape) != expected:
        raise ValueError(f"logits must be [num_nodes, num_classes] = {list(expected)} for this graph, got "
                         f"{list(logits.shape)}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits contain NaN or Inf; accuracy needs finite logits")
    if int(mask.sum()) == 0:
        return float("nan")
    predicted = logits[mask].argmax(dim=1)
    return float((predicted == torch.from_numpy(graph.y)[mask]).float().mean())


def train_fp32(
    model,
    graph,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    seed: int = 0,
    patience: int = 50,
    backend: str | None = "cpu",
    progress: bool = False,
    keep: str = "accuracy",
) -> dict:
    """Train ``model`` full-batch on ``graph``'s train split; keep the weights of the best validation epoch.

    ``seed`` fixes dropout (the weights are drawn when the model is built, see ``make_model``). Stops after
    ``patience`` epochs without a better validation accuracy (ties broken by lower validation loss), or with
    ``keep="loss"`` without a lower validation loss (``KEEP_CRITERIA``). Returns
    ``{"train_acc", "val_acc", "test_acc", "best_epoch", "epochs_run", "val_loss"}`` of the restored weights.
    ``progress``: a progress bar over the epochs (tqdm), for graphs where an epoch takes seconds.
    """
    return _train_on_graph(model, graph, None, epochs, lr, weight_decay, seed, patience, backend, progress, keep,
                           "FP32 training (epochs)")


def _train_on_graph(model, graph, extra_loss, epochs, lr, weight_decay, seed, patience, backend, progress, keep,
                    desc) -> dict:
    """:func:`train_fp32`'s training on one graph; ``extra_loss(logits)`` (None: nothing) is added to the labelled
    loss of every step."""
    _check_training(model, epochs, lr, weight_decay, seed, patience, progress, keep)
    x, y = training_tensors(graph)
    classes = model.convs[-1].out_features if hasattr(model, "convs") else None
    if classes is not None and y.numel() and not (0 <= int(y.min()) and int(y.max()) < classes):
        # a Graph checks its labels when built; one edited afterwards reached torch's "Target 99 is out of bounds"
        raise ValueError(f"{graph.name}: labels must lie in [0, {classes}), the model's classes; they span "
                         f"[{int(y.min())}, {int(y.max())}]")
    train = torch.from_numpy(graph.train_mask)
    val = torch.from_numpy(graph.val_mask)
    if not bool(train.any()):
        raise ValueError("graph has no training nodes")
    adj = graph.adj  # encoded once by the layers' cache, keyed on this object

    def step(epoch):
        logits = model(x, adj, backend=backend)
        labelled = F.cross_entropy(logits[train], y[train])
        return labelled if extra_loss is None else labelled + extra_loss(logits)

    def validate(loss):
        with torch.no_grad():
            logits = model(x, adj, backend=backend)
        val_acc = accuracy(logits, graph, "val") if bool(val.any()) else -float(loss.detach())
        val_loss = float(F.cross_entropy(logits[val], y[val])) if bool(val.any()) else float(loss.detach())
        return val_acc, val_loss

    best, best_epoch, epoch = _fit(model, step, validate, epochs, lr, weight_decay, patience, seed, progress, desc,
                                   "val acc", keep)
    with torch.no_grad():
        logits = model(x, adj, backend=backend)
    return {
        "train_acc": accuracy(logits, graph, "train"),
        "val_acc": accuracy(logits, graph, "val"),
        "test_acc": accuracy(logits, graph, "test"),
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "val_loss": best[1],
    }


TEACHER_SEED_BASE, TEACHER_SEED_STRIDE = 1_000_000, 1_000
"""Teacher k of the model of seed s has seed BASE + s * STRIDE + k (``teacher_seeds``)."""


def teacher_seeds(seed: int, teachers: int) -> list[int]:
    """The seeds of the ``teachers`` models distilled into the model of ``seed``: disjoint from every model seed a
    run uses (0 .. a few hundred) and from every other model seed's teachers, so no teacher is another seed's model."""
    if isinstance(teachers, bool) or not isinstance(teachers, int) or not 1 <= teachers <= TEACHER_SEED_STRIDE:
        raise ValueError(f"teachers must be an int in [1, {TEACHER_SEED_STRIDE}], got {teachers!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return [TEACHER_SEED_BASE + int(seed) * TEACHER_SEED_STRIDE + k for k in range(teachers)]


def train_fp32_distilled(
    model,
    graph,
    make_teacher,
    teachers: int = 4,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    seed: int = 0,
    patience: int = 50,
    backend: str | None = "cpu",
    progress: bool = False,
    keep: str = "accuracy",
) -> dict:
    """:func:`train_fp32` of ``model`` with a second term: the KL divergence from the mean softmax of ``teachers``
    models, each built by ``make_teacher(teacher_seed)`` and trained by :func:`train_fp32` on the same graph with the
    same settings (seeds :func:`teacher_seeds`), to the model's softmax, averaged over **every** node of the graph
    (knowledge distillation from an ensemble, transductive: the teachers' predictions on unlabelled nodes, never
    their labels). The labelled loss, the epoch kept (validation labels) and the returned metrics are
    :func:`train_fp32`'s; the metrics also hold ``teachers`` and the ensemble's ``teacher_val_acc`` and
    ``teacher_test_acc``.

    Why: a model trained on a few labels per class lands where its initialisation sends it; the ensemble's mean
    does much less so, and a model fitted to it on every node inherits that (measured in ``bench/README.md``, "The
    FP32 model distilled from an ensemble"). It costs ``teachers`` more trainings, and it is a different model from
    the published GCN's recipe.
    """
    _check_training(model, epochs, lr, weight_decay, seed, patience, progress, keep)  # before the teachers' training
    settings = dict(epochs=epochs, lr=lr, weight_decay=weight_decay, patience=patience, backend=backend, keep=keep)
    x, _ = training_tensors(graph)
    soft = []
    for teacher_seed in teacher_seeds(seed, teachers):
        teacher = make_teacher(teacher_seed)
        train_fp32(teacher, graph, seed=teacher_seed, **settings)
        with torch.no_grad():
            soft.append(F.softmax(teacher(x, graph.adj, backend=backend), dim=1))
    soft = torch.stack(soft).mean(dim=0)

    def distillation(logits):
        return F.kl_div(F.log_softmax(logits, dim=1), soft, reduction="batchmean")

    metrics = _train_on_graph(model, graph, distillation, epochs, lr, weight_decay, seed, patience, backend, progress,
                              keep, "FP32 training, distilled (epochs)")
    # accuracy takes finite logits: a class of teacher probability 0 (log -Inf) ranks below every other as it would
    # at -Inf, the lowest float32 keeping the argmax of every row
    log_soft = torch.log(soft).clamp_min(torch.finfo(soft.dtype).min)
    return {**metrics, "teachers": int(teachers), "teacher_val_acc": accuracy(log_soft, graph, "val"),
            "teacher_test_acc": accuracy(log_soft, graph, "test")}


def train_new_fp32_model(graph, kind: str = "gcn", hidden: int = 64, seed: int = 0, teachers: int = 0,
                         **settings) -> tuple:
    """``(model, metrics)``: a fresh ``make_model(graph, kind, hidden=hidden, seed=seed)`` trained on ``graph`` by
    :func:`train_fp32` (``teachers`` 0: the published recipe) or by :func:`train_fp32_distilled` from ``teachers``
    models built the same way (``dste run``'s default). ``settings``: the trainers' own (epochs, lr, patience, ...)."""
    if isinstance(teachers, bool) or not isinstance(teachers, int) or teachers < 0:
        raise ValueError(f"teachers must be an int >= 0 (0: plain training), got {teachers!r}")
    model = make_model(graph, kind, hidden=hidden, seed=seed)
    if not teachers:
        return model, train_fp32(model, graph, seed=seed, **settings)
    return model, train_fp32_distilled(
        model, graph, lambda teacher_seed: make_model(graph, kind, hidden=hidden, seed=teacher_seed),
        teachers=teachers, seed=seed, **settings)


def _check_training(model, epochs, lr, weight_decay, seed, patience, progress, keep="accuracy") -> None:
    """The trainers' arguments, each of its kind (``TypeError``: a bool ran as 1 epoch, a string failed in Python's
    comparison words) and range (``ValueError``: an infinite lr trained the weights into NaN)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (e.g. dste.gnn.make_model(graph)), got "
                        f"{type(model).__name__}")
    if keep not in KEEP_CRITERIA:
        raise ValueError(f"keep must be one of {KEEP_CRITERIA} (the validation epoch kept), got {keep!r}")
    for name, value in (("epochs", epochs), ("patience", patience)):
        if integer(value, name) < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if real_number(lr, "lr") <= 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    real_number(weight_decay, "weight_decay", low=0.0)
    integer(seed, "seed", low=SEED_RANGE[0], high=SEED_RANGE[1])
    flag(progress, "progress")


def _fit(model, step, validate, epochs, lr, weight_decay, patience, seed, progress, desc, label, keep="accuracy"):
    """Adam full-batch epochs under ``seed`` (dropout): ``step(epoch)`` returns the training loss, ``validate(loss)``
    the ``(val_acc, val_loss)`` the epoch is judged by (``keep="accuracy"``: higher accuracy, then lower loss;
    ``"loss"``: lower loss); stops after ``patience`` epochs without a better one and restores its weights (eval
    mode). Returns ``(best, best_epoch, epochs_run)``."""

    def rank(score):
        val_acc, val_loss = score
        return (val_acc, -val_loss) if keep == "accuracy" else (-val_loss,)

    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best, best_state, best_epoch, stale, epoch = None, None, 0, 0, 0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bar = tqdm(range(1, epochs + 1), desc=desc, disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            optimizer.zero_grad()
            loss = step(epoch)
            loss.backward()
            optimizer.step()
            model.eval()
            val_acc, val_loss = validate(loss)
            if best is None or rank((val_acc, val_loss)) > rank(best):
                best, best_epoch, stale = (val_acc, val_loss), epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if stale >= patience:
                    break
            bar.set_postfix_str(f"{label} {best[0]:.3f}", refresh=False)
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    return best, best_epoch, epoch


def train_fp32_on_snapshots(
    model,
    graphs,
    epochs: int = 200,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    seed: int = 0,
    patience: int = 50,
    backend: str | None = "cpu",
    progress: bool = False,
    keep: str = "accuracy",
) -> dict:
    """:func:`train_fp32` over a sequence of snapshots: epoch e takes one full-batch step on ``graphs[e % k]``'s
    train split, and the weights kept are those of the best *mean* validation accuracy over all k snapshots (ties:
    lower mean validation loss; ``keep="loss"``: the lowest mean validation loss), with the same patience. Each
    snapshot's propagation matrix is encoded once (the layers' own cache keeps only the last adjacency). On one graph
    with validation nodes it is :func:`train_fp32`. Returns the metrics of :func:`train_fp32`, each the mean over the
    snapshots.
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("train_fp32_on_snapshots needs at least one snapshot")
    _check_training(model, epochs, lr, weight_decay, seed, patience, progress, keep)
    data = [(graph, *training_tensors(graph), _propagation_of(model, graph)) for graph in graphs]
    for graph, *_ in data:
        if not bool(torch.from_numpy(graph.train_mask).any()):
            raise ValueError("a snapshot has no training nodes")
    validated = [item for item in data if bool(item[0].val_mask.any())]
    if not validated:
        raise ValueError("no snapshot has validation nodes: the epoch to keep is chosen on them")

    def step(epoch):
        graph, x, y, adj = data[(epoch - 1) % len(data)]
        train = torch.from_numpy(graph.train_mask)
        return F.cross_entropy(model(x, adj, backend=backend)[train], y[train])

    def mean_validation(loss):
        accs, losses = [], []
        with torch.no_grad():
            for graph, x, y, adj in validated:
                logits, val = model(x, adj, backend=backend), torch.from_numpy(graph.val_mask)
                accs.append(accuracy(logits, graph, "val"))
                losses.append(float(F.cross_entropy(logits[val], y[val])))
        return float(np.mean(accs)), float(np.mean(losses))

    best, best_epoch, epoch = _fit(model, step, mean_validation, epochs, lr, weight_decay, patience, seed, progress,
                                   "FP32 training on snapshots (epochs)", "mean val acc", keep)
    scores = {split: [] for split in ("train", "val", "test")}
    with torch.no_grad():
        for graph, x, _, adj in data:
            logits = model(x, adj, backend=backend)
            for split in scores:
                scores[split].append(accuracy(logits, graph, split))
    return {
        **{f"{split}_acc": float(np.nanmean(values)) for split, values in scores.items()},
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "val_loss": best[1],
    }


def _propagation_of(model, graph):
    """The snapshot's propagation matrix under the model's convolutions' normalization, encoded once; the raw
    adjacency for a model whose layers do not name one (they then encode it themselves)."""
    from .adjacency import propagation_matrix

    norms = {getattr(conv, "norm", None) for conv in getattr(model, "convs", ())}
    if len(norms) != 1 or None in norms:
        return graph.adj
    return propagation_matrix(graph.adj, graph.adj.shape[0], norms.pop())
