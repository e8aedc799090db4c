"""Save/load a DSTEMatrix to one ``.npz`` file with a versioned, checksummed JSON header; atomic file writes.

File layout: an uncompressed NumPy ``.npz`` archive holding every array field plus
``__meta__`` (uint8 bytes of a UTF-8 JSON object):
``{"magic": "DSTE", "format_version": 2, "shape": [N, M], "layout": ..., "encode_policy": {...},
"fields": {name: [dtype, shape]}, "absent": [optional fields that are None], "sha256": hex,
"header_sha256": hex}``; a matrix with a unit diagonal is written as version 3, whose header adds
``"unit_diagonal": true`` (a build that reads only versions 1-2 refuses it rather than lose the diagonal). ``fields`` records each array's dtype, so a float16 ``row_scale`` / ``col_scale``
(byte-ceiling encodes) round-trips as float16 and float32 files load as before; a scale of any other dtype is
refused by the matrix validation. A ``col_scale`` identical to ``row_scale`` (byte for byte, same dtype) loads as
the same object, as ``gcn_normalized`` built it.
``sha256`` covers, for each array field in sorted order, its name, dtype, shape and bytes;
``header_sha256`` covers everything else the loaded matrix depends on (magic, version, shape,
layout, encode policy, field list, absent list), as canonical JSON. ``load`` reads with
``allow_pickle=False`` and checks magic, the exact integer version (2 or 3; version-1 files, written
before the list tiles, are read with none), every header value's type, field list, dtypes, shapes and both checksums, then validates the matrix deeply; any
failure raises :class:`DSTEFileError` saying what is wrong.

Atomic replacement of every file DSTE writes: :func:`dste.atomic_files.atomic_write` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
import zlib

import numpy as np
import scipy.sparse as sp

from dste.atomic_files import atomic_write
from dste.format.constants import (
    FORMAT_VERSION,
    LIST_TILES_FORMAT_VERSION,
    READABLE_FORMAT_VERSIONS,
    UNIT_DIAGONAL_FORMAT_VERSION,
)
from dste.format.errors import DSTEFileError, DSTEFormatError
from dste.format.matrix import ARRAY_FIELDS, LIST_ARRAY_FIELDS, OPTIONAL_ARRAY_FIELDS, DSTEMatrix

MAGIC = "DSTE"
META_KEY = "__meta__"
_ZIP_MAGIC = b"PK\x03\x04"
_NPY_MAGIC = b"\x93NUMPY"


# ------------------------------------------------------------------ checksums
def _checksum(arrays: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _header_checksum(meta: dict) -> str:
    covered = {key: value for key, value in meta.items() if key not in ("sha256", "header_sha256")}
    return hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


# ------------------------------------------------------------------ save / load
def save(matrix: DSTEMatrix, path) -> None:
    """Write ``matrix`` to ``path`` (exactly that name; ``.npz`` is not appended), atomically."""
    if not isinstance(matrix, DSTEMatrix):
        swapped = " (the arguments look swapped)" if isinstance(path, DSTEMatrix) else ""
        encode_first = " (encode it first: dste.encode)" if sp.issparse(matrix) else ""
        raise TypeError(f"save takes a DSTEMatrix and a path, save(matrix, path); got {type(matrix).__name__} as the "
                        f"matrix{swapped}{encode_first}")
    arrays = {name: getattr(matrix, name) for name in ARRAY_FIELDS}
    absent = []
    for name in OPTIONAL_ARRAY_FIELDS:
        value = getattr(matrix, name)
        if value is None:
            absent.append(name)
        else:
            arrays[name] = value
    meta = {
        "magic": MAGIC,
        "format_version": UNIT_DIAGONAL_FORMAT_VERSION if matrix.unit_diagonal else LIST_TILES_FORMAT_VERSION,
        "shape": [int(s) for s in matrix.shape],
        "layout": matrix.layout,
        "encode_policy": matrix.encode_policy,
        "fields": {name: [value.dtype.str, list(value.shape)] for name, value in arrays.items()},
        "absent": absent,
        "sha256": _checksum(arrays),
    }
    if matrix.unit_diagonal:
        meta["unit_diagonal"] = True
    meta = json.loads(json.dumps(meta))  # the header checksum is over what load will read back
    meta["header_sha256"] = _header_checksum(meta)
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda handle: np.savez(handle, **payload))


_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    KeyError,
    IndexError,
    TypeError,
    zipfile.BadZipFile,
    zlib.error,
    struct.error,
    NotImplementedError,
    UnicodeDecodeError,
    RuntimeError,
)


def load(path) -> DSTEMatrix:
    """Read and fully validate a file written by :func:`save`."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise DSTEFileError(f"{path}: is a directory, not a DSTE file")
    with open(path, "rb") as handle:  # FileNotFoundError passes through unchanged
        head = handle.read(len(_NPY_MAGIC))
    if head.startswith(_NPY_MAGIC):
        raise DSTEFileError(f"{path}: is a single NumPy array (.npy), not a DSTE file (.npz archive written by save)")
    if not head.startswith(_ZIP_MAGIC):
        raise DSTEFileError(f"{path}: not a DSTE file (not a .npz archive: starts with {head[:4]!r})")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            if META_KEY not in names:
                raise DSTEFileError(f"{path}: not a DSTE file (no {META_KEY} header)")
            meta = json.loads(bytes(archive[META_KEY]).decode("utf-8"))
            _check_meta(path, meta)
            expected = set(meta["fields"])
            if names - {META_KEY} != expected:
                raise DSTEFileError(
                    f"{path}: arrays {sorted(names - {META_KEY})} differ from the header's field list {sorted(expected)}"
                )
            arrays = {name: archive[name] for name in expected}
    except DSTEFileError:
        raise
    except _READ_ERRORS as exc:
        raise DSTEFileError(f"{path}: corrupt or truncated DSTE file ({type(exc).__name__}: {exc})") from exc
    for name, (dtype, shape) in meta["fields"].items():
        if arrays[name].dtype.str != dtype or list(arrays[name].shape) != shape:
            raise DSTEFileError(f"{path}: field {name} is {arrays[name].dtype.str}{list(arrays[name].shape)}, header says {dtype}{shape}")
    if _checksum(arrays) != meta["sha256"]:
        raise DSTEFileError(f"{path}: checksum mismatch; the file is corrupt")
    fields = {name: np.ascontiguousarray(arrays[name]) for name in expected}
    for name in meta["absent"]:
        fields[name] = None
    _share_identical_scales(fields)
    try:
        matrix = DSTEMatrix(
            shape=tuple(meta["shape"]), layout=meta["layout"], encode_policy=meta["encode_policy"],
            unit_diagonal=meta.get("unit_diagonal", False), **fields
        )
        matrix.validate(deep=True)
    except DSTEFormatError as exc:
        raise DSTEFileError(f"{path}: invalid matrix: {exc}") from exc
    except (TypeError, ValueError, IndexError) as exc:
        raise DSTEFileError(f"{path}: invalid matrix ({type(exc).__name__}: {exc})") from exc
    return matrix


def _share_identical_scales(fields: dict) -> None:
    """Make ``col_scale`` the ``row_scale`` object when the file holds the same vector twice (as ``save`` writes
    ``gcn_normalized``'s shared D^-1/2), so ``nbytes`` counts it once after a round trip as before it."""
    row_scale, col_scale = fields.get("row_scale"), fields.get("col_scale")
    if (row_scale is not None and col_scale is not None and row_scale.dtype == col_scale.dtype
            and np.array_equal(row_scale.view(np.uint8), col_scale.view(np.uint8))):
        fields["col_scale"] = row_scale


def _is_int(value) -> bool:
    return type(value) is int  # bool and float (1.0, true) are not versions, shapes or sizes


def _check_meta(path, meta):
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
        raise DSTEFileError(f"{path}: not a DSTE file (bad magic)")
    version = meta.get("format_version")
    if not _is_int(version) or version not in READABLE_FORMAT_VERSIONS:
        raise DSTEFileError(
            f"{path}: format version {version!r} ({type(version).__name__}); this build reads the integer versions "
            f"{READABLE_FORMAT_VERSIONS} (writes {LIST_TILES_FORMAT_VERSION}, or {FORMAT_VERSION} for a matrix with a unit "
            "diagonal)"
        )
    for key in ("shape", "layout", "encode_policy", "fields", "absent", "sha256", "header_sha256"):
        if key not in meta:
            raise DSTEFileError(f"{path}: header lacks {key!r} (written by an older build or corrupt)")
    if not isinstance(meta["header_sha256"], str) or _header_checksum(meta) != meta["header_sha256"]:
        raise DSTEFileError(f"{path}: header checksum mismatch; the header is corrupt")
    if version >= UNIT_DIAGONAL_FORMAT_VERSION:
        if meta.get("unit_diagonal") is not True:
            raise DSTEFileError(f"{path}: a version-{version} header must hold \"unit_diagonal\": true, got "
                                f"{meta.get('unit_diagonal')!r}")
    elif "unit_diagonal" in meta:
        raise DSTEFileError(f"{path}: a version-{version} header cannot hold unit_diagonal (version "
                            f"{UNIT_DIAGONAL_FORMAT_VERSION} added it)")
    shape = meta["shape"]
    if not isinstance(shape, list) or len(shape) != 2 or not all(_is_int(s) and s >= 0 for s in shape):
        raise DSTEFileError(f"{path}: header shape must be two integers >= 0, got {shape!r}")
    if not isinstance(meta["layout"], str) or not isinstance(meta["encode_policy"], dict):
        raise DSTEFileError(f"{path}: header layout must be a string and encode_policy an object")
    if not isinstance(meta["sha256"], str):
        raise DSTEFileError(f"{path}: header sha256 must be a string")
    fields, absent = meta["fields"], meta["absent"]
    if not isinstance(fields, dict) or not isinstance(absent, list) or not all(isinstance(a, str) for a in absent):
        raise DSTEFileError(f"{path}: header fields must be an object and absent a list of names")
    for name, spec in fields.items():
        if (
            not isinstance(spec, list)
            or len(spec) != 2
            or not isinstance(spec[0], str)
            or not isinstance(spec[1], list)
            or not all(_is_int(s) and s >= 0 for s in spec[1])
        ):
            raise DSTEFileError(f"{path}: header entry of field {name!r} must be [dtype string, shape list], got {spec!r}")
    required = set(ARRAY_FIELDS)
    if version == 1:  # written before the list tiles: the matrix is built with none
        required -= set(LIST_ARRAY_FIELDS)
    present = set(fields)
    if not required <= present or not (present - required) <= set(OPTIONAL_ARRAY_FIELDS):
        raise DSTEFileError(f"{path}: header field list {sorted(present)} is not the DSTE field set")
    if set(absent) | (present & set(OPTIONAL_ARRAY_FIELDS)) != set(OPTIONAL_ARRAY_FIELDS) or set(absent) & present:
        raise DSTEFileError(f"{path}: header does not account for every optional field exactly once")
