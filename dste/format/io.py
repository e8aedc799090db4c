"""Save/load a DSTEMatrix to one ``.npz`` file with a versioned, checksummed JSON header.

File layout: an uncompressed NumPy ``.npz`` archive holding every array field plus
``__meta__`` (uint8 bytes of a UTF-8 JSON object):
``{"magic": "DSTE", "format_version": 1, "shape": [N, M], "layout": ..., "encode_policy": {...},
"fields": {name: [dtype, shape]}, "absent": [optional fields that are None], "sha256": hex}``.
The checksum covers, for each field in sorted order, its name, dtype, shape and bytes.
``load`` reads with ``allow_pickle=False`` and checks magic, version, field list, dtypes,
shapes and checksum, then validates the matrix deeply; any failure raises
:class:`DSTEFileError` saying what is wrong. A file is written to a temporary name and
renamed, so a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from dste.format.constants import FORMAT_VERSION
from dste.format.errors import DSTEFileError, DSTEFormatError
from dste.format.matrix import ARRAY_FIELDS, OPTIONAL_ARRAY_FIELDS, DSTEMatrix

MAGIC = "DSTE"
META_KEY = "__meta__"


def _checksum(arrays: dict) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def save(matrix: DSTEMatrix, path) -> None:
    """Write ``matrix`` to ``path`` (exactly that name; ``.npz`` is not appended)."""
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
        "format_version": FORMAT_VERSION,
        "shape": list(matrix.shape),
        "layout": matrix.layout,
        "encode_policy": matrix.encode_policy,
        "fields": {name: [value.dtype.str, list(value.shape)] for name, value in arrays.items()},
        "absent": absent,
        "sha256": _checksum(arrays),
    }
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **payload)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path) -> DSTEMatrix:
    """Read and fully validate a file written by :func:`save`."""
    path = os.fspath(path)
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
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DSTEFileError(f"{path}: corrupt or truncated DSTE file ({type(exc).__name__}: {exc})") from exc
    for name, (dtype, shape) in meta["fields"].items():
        if arrays[name].dtype.str != dtype or list(arrays[name].shape) != shape:
            raise DSTEFileError(f"{path}: field {name} is {arrays[name].dtype.str}{list(arrays[name].shape)}, header says {dtype}{shape}")
    if _checksum(arrays) != meta["sha256"]:
        raise DSTEFileError(f"{path}: checksum mismatch; the file is corrupt")
    fields = {name: np.ascontiguousarray(arrays[name]) for name in expected}
    for name in meta["absent"]:
        fields[name] = None
    try:
        matrix = DSTEMatrix(
            shape=tuple(meta["shape"]), layout=meta["layout"], encode_policy=meta["encode_policy"], **fields
        )
        matrix.validate(deep=True)
    except DSTEFormatError as exc:
        raise DSTEFileError(f"{path}: invalid matrix: {exc}") from exc
    except TypeError as exc:
        raise DSTEFileError(f"{path}: wrong field set: {exc}") from exc
    return matrix


def _check_meta(path, meta):
    if not isinstance(meta, dict) or meta.get("magic") != MAGIC:
        raise DSTEFileError(f"{path}: not a DSTE file (bad magic)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise DSTEFileError(f"{path}: format version {version!r}; this build reads version {FORMAT_VERSION}")
    for key in ("shape", "layout", "fields", "absent", "sha256"):
        if key not in meta:
            raise DSTEFileError(f"{path}: header lacks {key!r}")
    required = set(ARRAY_FIELDS)
    present = set(meta["fields"])
    if not required <= present or not (present - required) <= set(OPTIONAL_ARRAY_FIELDS):
        raise DSTEFileError(f"{path}: header field list {sorted(present)} is not the DSTE field set")
    if set(meta["absent"]) | (present & set(OPTIONAL_ARRAY_FIELDS)) != set(OPTIONAL_ARRAY_FIELDS):
        raise DSTEFileError(f"{path}: header does not account for every optional field")
