"""Fuzz: Planetoid and .npz loaders on corrupted files; the CLI's argument parsing never raises a traceback."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dste.cli as cli
from dste.data import UnsafePickleError, load_planetoid
from dste.data.npz import load_npz, save_npz
from tests.data.test_planetoid import write_tiny_planetoid

from .files import scratch_folder
from .strategies import examples

PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("planetoid")
    write_tiny_planetoid(folder, "citeseer")
    reference = load_planetoid("citeseer", folder)
    return {part: (folder / f"ind.citeseer.{part}").read_bytes() for part in PARTS}, reference


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """One folder for every example's files: each example writes all the files it loads again (a folder
    per example left hundreds of folders and over a thousand files per run to create and later delete)."""
    with scratch_folder(tmp_path_factory, "fuzz-scratch") as folder:  # in memory where possible (tests/fuzz/files.py)
        yield folder


@settings(max_examples=examples(150))
@given(data=st.data())
def test_corrupted_planetoid_files_are_refused_or_consistent(tiny_files, data, scratch):
    files, reference = tiny_files
    folder = scratch / "planetoid"
    folder.mkdir(exist_ok=True)
    target = data.draw(st.sampled_from(PARTS))
    for part, content in files.items():
        if part == target:
            content = bytearray(content)
            if data.draw(st.booleans()) and len(content) > 1:
                content = content[: data.draw(st.integers(0, len(content) - 1))]
            else:
                offset = data.draw(st.integers(0, len(content) - 1))
                content[offset] ^= data.draw(st.integers(1, 255))
        (folder / f"ind.citeseer.{part}").write_bytes(bytes(content))
    try:
        g = load_planetoid("citeseer", folder)
    except UnsafePickleError:
        return
    except ValueError as error:
        assert "ind.citeseer" in str(error), error
        return
    # what loads is a consistent graph: labels in range, features finite, masks disjoint
    assert g.num_nodes == g.x.shape[0] == g.y.shape[0]
    assert ((g.y >= 0) & (g.y < g.num_classes)).all() and np.isfinite(g.x).all()
    assert not (g.train_mask & g.test_mask).any() and not (g.val_mask & g.test_mask).any()


@pytest.fixture(scope="module")
def npz_bytes(tmp_path_factory):
    from dste.data import make_graph

    path = tmp_path_factory.mktemp("npz") / "g.npz"
    graph = make_graph("cora-like", seed=0)
    save_npz(graph, path)
    return path.read_bytes(), graph


# hypothesis prints the failing example's repr; the bundle's bytes make it megabytes long
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")


@settings(max_examples=examples(60))
@given(data=st.data())
def test_corrupted_npz_bundles_are_refused_or_unchanged(npz_bytes, data, scratch):
    original, graph = npz_bytes
    content = bytearray(original)
    if data.draw(st.booleans()):
        content = content[: data.draw(st.integers(0, len(content) - 1))]
    else:
        offset = data.draw(st.integers(0, len(content) - 1))
        content[offset] ^= data.draw(st.integers(1, 255))
    path = scratch / "g.npz"
    path.write_bytes(bytes(content))
    try:
        loaded = load_npz(path)
    except ValueError as error:
        assert str(error)
        return
    # compressed members carry a CRC: what loads equals what was saved
    assert (loaded.adj != graph.adj).nnz == 0 and np.array_equal(loaded.y, graph.y)


TOKENS = st.sampled_from([
    "run", "bench", "--dataset", "--root", "--seeds", "--snapshots", "--episodes", "--model", "--hidden",
    "--epochs", "--lambda", "--budget", "--budget-penalty", "--target", "--out", "--quick", "--no-progress",
    "0", "-1", "3", "4", "1e9", "nan", "inf", "abc", "", "gcn", "gat", "trn1", "trn9", "static50", "none",
    "cora", "cora-like", "no-such-graph", "/nonexistent/dir", "--unknown", "-x", "\x00", "é",
])


class _WouldRun(Exception):
    pass


@settings(max_examples=examples(250))
@given(argv=st.lists(TOKENS, max_size=8))
def test_cli_bad_arguments_give_a_usage_error_not_a_traceback(argv, monkeypatch_session):
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        assert exit_info.code in (0, 2), argv
        return
    except _WouldRun:
        return  # valid options: the job itself is stubbed out
    assert code in (0, 2), argv


@pytest.fixture(scope="module")
def monkeypatch_session():
    """Stub the long jobs: valid argument lists stop where the work would start."""
    import dste.experiments.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise _WouldRun()

    patch = pytest.MonkeyPatch()
    patch.setattr(pipeline, "run", refuse)
    patch.setattr(pipeline, "_load_base", refuse)
    bench = cli.SUBCOMMANDS["bench"]
    patch.setitem(cli.SUBCOMMANDS, "bench", (bench[0], bench[1], refuse))
    yield patch
    patch.undo()
