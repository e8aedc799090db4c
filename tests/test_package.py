"""The top-level ``dste`` namespace: its lazily resolved names are listed, resolve, and nothing else does."""

import pytest

import dste


def test_dir_lists_every_public_name():
    missing = set(dste.__all__) - set(dir(dste))
    assert not missing, f"dir(dste) lacks {sorted(missing)}"


@pytest.mark.parametrize("name", [n for n in dste.__all__ if n != "__version__"])
def test_public_name_resolves(name):
    assert getattr(dste, name) is not None


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'not_a_name'"):
        dste.not_a_name  # noqa: B018
