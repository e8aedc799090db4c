"""Split masks from node ids (ids that are not integers are refused, not cast), and the Planetoid-style split."""

import numpy as np
import pytest

from dste.data.splits import masks_from_indices, planetoid_split, split_sizes_that_fit


def test_masks_from_integer_ids_of_any_width():
    train, test = masks_from_indices(5, np.array([0, 3], np.uint8), [4])
    np.testing.assert_array_equal(train, [True, False, False, True, False])
    np.testing.assert_array_equal(test, [False, False, False, False, True])
    (empty,) = masks_from_indices(3, [])
    assert not empty.any()


@pytest.mark.parametrize("ids", [
    np.array([False, True, True, False, True]),  # a bool mask was read as ids 0 and 1
    np.array([1.7, 3.0]),  # 1.7 was floored to node 1
])
def test_ids_that_are_not_integers_are_refused(ids):
    with pytest.raises(TypeError, match="split indices must be integer node ids"):
        masks_from_indices(5, ids)


def test_small_classes_half_gives_a_small_class_half_its_nodes_and_refuse_raises():
    y = np.concatenate([np.zeros(100, dtype=np.int64), np.ones(7, dtype=np.int64)])
    train, _, _ = planetoid_split(y, 2, np.random.default_rng(0), 20, 30, 30, small_classes="half")
    np.testing.assert_array_equal(np.bincount(y[train]), [20, 3])
    with pytest.raises(ValueError, match="class 1 has 7 nodes"):
        planetoid_split(y, 2, np.random.default_rng(0), 20, 30, 30)
    with pytest.raises(ValueError, match="small_classes"):
        planetoid_split(y, 2, np.random.default_rng(0), 20, 30, 30, small_classes="drop")


def test_split_sizes_shrink_to_coras_share_only_where_they_do_not_fit():
    assert split_sizes_that_fit(2568, 500, 1000) == (500, 1000)
    assert split_sizes_that_fit(0, 500, 1000) == (500, 1000)  # nothing left: the split itself refuses
    val, test = split_sizes_that_fit(1000, 500, 1000)
    assert val + test == int(np.floor(1000 * 1500 / 2568)) and abs(test - 2 * val) <= 1  # in their ratio, rounded


def test_split_sizes_that_fit_exactly_are_kept():
    # split_sizes_that_fit: "unchanged where they fit": 500 + 1,000 equals the 1,500 nodes left, so nothing shrinks.
    assert split_sizes_that_fit(1500, 500, 1000) == (500, 1000)


def test_an_id_equal_to_the_node_count_is_refused_by_range():
    # masks_from_indices: "split indices must lie in [0, n)"; id n is out of range by one and is reported as such
    # (a ValueError naming the range), not left to NumPy's IndexError.
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\), got \[0, 5\]"):
        masks_from_indices(5, np.array([0, 5]))
