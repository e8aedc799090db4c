"""Split masks from node ids: ids that are not integers are refused, not cast."""

import numpy as np
import pytest

from dste.data.splits import masks_from_indices


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
