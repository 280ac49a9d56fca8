"""Reader for the IDX files MNIST and Fashion-MNIST ship in (optionally gzip-compressed)."""
from __future__ import annotations

import gzip
import os

import numpy as np

from pada_fast.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_UINT8_TYPE_CODE = 0x08


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file; gzip is detected from the file's first bytes, not its name.

    Only the uint8 element type is supported (the one (Fashion-)MNIST uses)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    opener = gzip.open if head == _GZIP_MAGIC else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise DataError(f"cannot read IDX file {path}: {err}; the download may be truncated, "
                         "fetch it again") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path} is not an IDX file (its first bytes are {raw[:4]!r}, expected "
                         "0x00 0x00 <type> <ndim>)")
    type_code, ndim = raw[2], raw[3]
    if type_code != _UINT8_TYPE_CODE:
        raise DataError(f"{path}: IDX element type 0x{type_code:02x} is not supported (only uint8, "
                         "0x08, as in MNIST and Fashion-MNIST)")
    header_end = 4 + 4 * ndim
    if len(raw) < header_end:
        raise DataError(f"{path}: IDX header promises {ndim} dimensions but the file ends early")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64))
    body = len(raw) - header_end
    if body != expected:
        raise DataError(f"{path}: IDX header says shape {shape} ({expected} bytes) but the file has "
                         f"{body} data bytes; the file is truncated or corrupt, fetch it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_end).reshape(shape).copy()


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool = False) -> None:
    """Write a uint8 array as IDX (used by tests to build small Fashion-MNIST-shaped files)."""
    array = np.ascontiguousarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"write_idx supports uint8 arrays only, got {array.dtype}")
    header = bytes([0, 0, _UINT8_TYPE_CODE, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
