"""Train / validation / test splits in the Planetoid style.

`planetoid_split` takes a fixed number of labelled nodes per class for training, then a fixed
number of the remaining nodes for validation and for testing, all chosen by a seeded
`numpy.random.Generator`; the same seed always yields the same masks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["planetoid_split", "masks_from_indices", "split_sizes_that_fit", "PLANETOID_SPLIT_SHARE", "SplitTooLarge"]


class SplitTooLarge(ValueError):
    """``planetoid_split``'s refusal of validation and test sizes the nodes left after the training picks cannot hold
    (callers that know where the sizes came from add that)."""


PLANETOID_SPLIT_SHARE = 1500 / 2568
"""Share of the nodes left after the training picks that Cora's public split gives to validation and test (500 + 1,000
of 2,708 - 140): a graph too small for the fixed sizes gets this share, validation and test in their ratio."""


def masks_from_indices(n: int, *index_sets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bool masks of length n, one per array of integer node ids; raises if an id is out of range or not an
    integer."""
    masks = []
    for indices in index_sets:
        indices = np.asarray(indices)
        if indices.size and indices.dtype.kind not in "iu":
            # a bool mask cast to int64 named nodes 0 and 1; a float id 1.7 was floored to node 1
            raise TypeError(f"split indices must be integer node ids, got {indices.dtype} (pass np.flatnonzero(mask) "
                            "for a bool mask)")
        indices = indices.astype(np.int64).ravel()
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            raise ValueError(f"split indices must lie in [0, {n}), got [{indices.min()}, {indices.max()}]")
        mask = np.zeros(n, dtype=bool)
        mask[indices] = True
        masks.append(mask)
    return tuple(masks)


def split_sizes_that_fit(left: int, num_val: int, num_test: int) -> tuple[int, int]:
    """``(num_val, num_test)`` for ``left`` nodes after the training picks: unchanged where they fit (or no node is
    left, which ``planetoid_split`` refuses), else shrunk in their ratio to ``PLANETOID_SPLIT_SHARE`` of ``left``."""
    wanted = num_val + num_test
    if left <= 0 or wanted <= left:
        return num_val, num_test
    total = int(np.floor(left * PLANETOID_SPLIT_SHARE))
    shrunk_val = int(round(total * num_val / wanted))
    return shrunk_val, total - shrunk_val


def planetoid_split(
    y: np.ndarray,
    num_classes: int,
    rng: np.random.Generator,
    train_per_class: int = 20,
    num_val: int = 500,
    num_test: int = 1000,
    small_classes: str = "refuse",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train_mask, val_mask, test_mask): `train_per_class` per class, then val and test at random.

    `small_classes`: "refuse" raises ValueError for a class of fewer than `train_per_class` nodes; "half" takes at
    most half of each class's nodes (rounded down) for training, so a small class keeps nodes for the evaluation.
    Raises ValueError when the graph has too few nodes for the requested validation and test sizes.
    """
    if small_classes not in ("refuse", "half"):
        raise ValueError(f"small_classes must be 'refuse' or 'half', got {small_classes!r}")
    y = np.asarray(y)
    n = y.shape[0]
    order = rng.permutation(n)
    train_parts = []
    for label in range(num_classes):
        members = order[y[order] == label]
        if small_classes == "half":
            train_parts.append(members[:min(train_per_class, members.size // 2)])
            continue
        if members.size < train_per_class:
            raise ValueError(
                f"class {label} has {members.size} nodes, fewer than train_per_class={train_per_class}"
            )
        train_parts.append(members[:train_per_class])
    train = np.concatenate(train_parts) if train_parts else np.zeros(0, dtype=np.int64)
    is_train = np.zeros(n, dtype=bool)
    is_train[train] = True
    rest = order[~is_train[order]]
    if rest.size < num_val + num_test:
        raise SplitTooLarge(
            f"only {rest.size} nodes left after training picks; need num_val + num_test = {num_val + num_test}"
        )
    return masks_from_indices(n, train, rest[:num_val], rest[num_val : num_val + num_test])
