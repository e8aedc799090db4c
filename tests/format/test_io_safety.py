"""Saved matrices: exact versions, a checksummed header, clear errors for other files, atomic replacement."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dste.format import DSTEFileError, DSTEMatrix, encode, load, save
from dste.atomic_files import TEMP_SUFFIX
from dste.format.io import _header_checksum, atomic_write


def _small():
    rng = np.random.default_rng(0)
    dense = np.where(rng.random((200, 150)) < 0.05, rng.standard_normal((200, 150)), 0.0)
    return encode(dense)


def _rewrite(path, out, edit_meta, reseal=True):
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    meta = json.loads(bytes(arrays.pop("__meta__")).decode())
    edit_meta(meta)
    if reseal:  # a header that is self-consistent: only the edited value can be refused
        meta["header_sha256"] = _header_checksum(meta)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(out, "wb") as handle:
        np.savez(handle, **arrays)
    return out


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "m.dste.npz"
    E = _small()
    save(E, path)
    return E, path


@pytest.mark.parametrize("version", [1.0, True, "1", [1], None])
def test_only_the_exact_integer_version_loads(saved, tmp_path, version):
    _, path = saved
    bad = _rewrite(path, tmp_path / "v.npz", lambda m: m.update(format_version=version))
    with pytest.raises(DSTEFileError, match="version"):
        load(bad)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m.update(layout="block"),
        lambda m: m["encode_policy"].update(kinds="int8"),
        lambda m: m.update(shape=[m["shape"][0], m["shape"][1] + 1]),
        lambda m: m.update(absent=list(reversed(m["absent"]))) if len(m["absent"]) > 1 else m.update(magic="DSTE", x=1),
    ],
)
def test_a_changed_header_value_fails_the_header_checksum(saved, tmp_path, edit):
    _, path = saved
    bad = _rewrite(path, tmp_path / "h.npz", edit, reseal=False)
    with pytest.raises(DSTEFileError, match="header checksum"):
        load(bad)


def test_bool_shape_is_refused(saved, tmp_path):
    _, path = saved
    bad = _rewrite(path, tmp_path / "s.npz", lambda m: m.update(shape=[True, m["shape"][1]]))
    with pytest.raises(DSTEFileError, match="shape"):
        load(bad)


def test_loading_a_npy_file_names_the_problem(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(4))
    with pytest.raises(DSTEFileError, match=r"\.npy"):
        DSTEMatrix.load(path)


def test_loading_a_directory_or_missing_file(tmp_path):
    with pytest.raises(DSTEFileError, match="directory"):
        load(tmp_path)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nope.npz")


def test_failed_save_keeps_the_previous_file_and_leaves_no_temporary(saved, monkeypatch):
    E, path = saved
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(E, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(path.parent)) == [path.name]
    assert abs(load(path).decode() - E.decode()).max() == 0


def test_a_killed_writers_temporary_is_ignored_and_then_removed(saved):
    E, path = saved
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = path.parent / f".{path.name}.{dead_pid}.deadbeef{TEMP_SUFFIX}"
    stale.write_bytes(b"partial")
    assert abs(load(path).decode() - E.decode()).max() == 0  # never picked up
    save(E, path)
    assert not stale.exists()
    assert sorted(os.listdir(path.parent)) == [path.name]


def test_atomic_write_refuses_a_directory_target(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        atomic_write(tmp_path, lambda h: h.write(b"x"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "missing" / "f.json", lambda h: h.write(b"x"))


def test_load_validates_deeply_and_refuses_an_entry_stored_in_two_tiles(tmp_path):
    # Module docstring: load "validates the matrix deeply"; save writes consistent checksums, so only the deep
    # validation (one (row, column) pair in two entry tiles, as in test_encode's tampering test) can refuse this file.
    from tests.format.graphs import community_graph

    adj, _ = community_graph(500, seed=5)
    E = encode(adj, bitmap_min_entries=3)  # the floor keeps entry tiles to tamper with
    fields = {f.name: getattr(E, f.name) for f in E.__dataclass_fields__.values() if f.init}
    cols, rows = E.etile_cols.copy(), E.etile_rows.copy()
    cols[0, 1], rows[0, 1] = cols[0, 0], rows[0, 0]
    path = tmp_path / "twice.dste.npz"
    save(DSTEMatrix(**dict(fields, etile_cols=cols, etile_rows=rows)), path)  # passes the shallow checks
    with pytest.raises(DSTEFileError, match="two tiles"):
        load(path)


def test_an_array_the_header_does_not_list_is_refused(saved, tmp_path):
    # Module docstring: load checks the "field list"; an archive with one array more than the header names is not a
    # file save wrote, and is refused by name.
    _, path = saved
    with np.load(path, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    arrays["smuggled"] = np.arange(3)
    out = tmp_path / "extra.dste.npz"
    with open(out, "wb") as handle:
        np.savez(handle, **arrays)
    with pytest.raises(DSTEFileError, match="smuggled"):
        load(out)
