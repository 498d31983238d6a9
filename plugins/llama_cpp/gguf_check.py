"""A bounded GGUF header reader that refuses damaged or hostile files before llama.cpp sees them.

`scan_gguf` reads the magic, version, metadata and tensor table of a little-endian GGUF v2 or v3
file and checks every count, length, dimension and offset against what the file can hold, so a
truncated or crafted file fails in milliseconds with an `InvalidModelFile` that names only the
file's base name. It reads through a bounded window with plain file reads (no mmap, no numpy, no
`gguf` package), keeps the values of small arrays only, and never touches llama.cpp or tensor
data. Non-regular files (FIFOs, devices, directories) are refused from `stat` alone.
"""

from __future__ import annotations

import math
import os
import stat
import struct
from dataclasses import dataclass
from io import FileIO
from pathlib import Path
from typing import cast

from lampstand.plugins.errors import InvalidModelFile

__all__ = ["GGML_TYPES", "GgmlType", "GgufArray", "GgufHeader", "TensorInfo", "scan_gguf"]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 used 32-bit counts and is gone from every current writer
DEFAULT_ALIGNMENT = 32

# Caps far above any real model and far below what would cost real time or memory.
MAX_TENSOR_COUNT = 200_000  # the largest unpacked-MoE files hold tens of thousands
MAX_KV_COUNT = 100_000  # real files carry a few dozen keys
MAX_KEY_BYTES = 4096  # real keys are dotted names of a few dozen bytes
MAX_STRING_BYTES = 16 * 1024 * 1024  # chat templates, the longest real strings, are kilobytes
MAX_ARRAY_LENGTH = 1 << 24  # the largest vocabularies are a few hundred thousand tokens
MAX_KEPT_BYTES = 64 * 1024 * 1024  # memory for kept strings and array items, summed over the header
KEPT_OBJECT_BYTES = 64  # what one kept Python str, int or float costs on top of its text
MAX_KEPT_ARRAY_ITEMS = 64  # longer arrays (tokens, merges) are skipped, only their length kept
MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 63  # GGML_MAX_NAME - 1; llama.cpp refuses longer names
MAX_TENSOR_ELEMENTS = 2**63 - 1  # ggml counts elements in int64
READ_CHUNK_BYTES = 1 << 20

TYPE_STRING = 8
TYPE_ARRAY = 9
# struct codes of the fixed-size GGUF value types, by type id
_SCALAR_CODES: dict[int, str] = {
    0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d",
}
_SCALARS = {value_type: struct.Struct("<" + code) for value_type, code in _SCALAR_CODES.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_COUNTS = struct.Struct("<QQ")
_ARRAY_HEADER = struct.Struct("<IQ")
_TYPE_AND_OFFSET = struct.Struct("<IQ")
MIN_KV_BYTES = _U64.size + _U32.size + 1  # key length, value type, one-byte value
MIN_TENSOR_INFO_BYTES = _U64.size + _U32.size + _TYPE_AND_OFFSET.size  # name length, n_dims, type, offset


@dataclass(frozen=True)
class GgmlType:
    """How a ggml tensor type packs its elements: `type_size` bytes per block of `block_size`."""

    name: str
    block_size: int
    type_size: int


# ggml's type traits (ggml.c `type_traits`), by type id; ids 4, 5 and 31-33, 36-38 are retired.
GGML_TYPES: dict[int, GgmlType] = {
    type_id: GgmlType(name, block, size)
    for type_id, name, block, size in (
        (0, "F32", 1, 4), (1, "F16", 1, 2), (2, "Q4_0", 32, 18), (3, "Q4_1", 32, 20),
        (6, "Q5_0", 32, 22), (7, "Q5_1", 32, 24), (8, "Q8_0", 32, 34), (9, "Q8_1", 32, 40),
        (10, "Q2_K", 256, 84), (11, "Q3_K", 256, 110), (12, "Q4_K", 256, 144), (13, "Q5_K", 256, 176),
        (14, "Q6_K", 256, 210), (15, "Q8_K", 256, 292), (16, "IQ2_XXS", 256, 66), (17, "IQ2_XS", 256, 74),
        (18, "IQ3_XXS", 256, 98), (19, "IQ1_S", 256, 50), (20, "IQ4_NL", 32, 18), (21, "IQ3_S", 256, 110),
        (22, "IQ2_S", 256, 82), (23, "IQ4_XS", 256, 136), (24, "I8", 1, 1), (25, "I16", 1, 2),
        (26, "I32", 1, 4), (27, "I64", 1, 8), (28, "F64", 1, 8), (29, "IQ1_M", 256, 56),
        (30, "BF16", 1, 2), (34, "TQ1_0", 256, 54), (35, "TQ2_0", 256, 66), (39, "MXFP4", 32, 17),
        (40, "NVFP4", 64, 36), (41, "Q1_0", 128, 18),
    )
}

_FILE_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class GgufArray:
    """A metadata array: its item type and length, and its values when it is short."""

    item_type: int
    length: int
    values: tuple[object, ...] | None


@dataclass(frozen=True)
class TensorInfo:
    """One entry of the tensor table; `offset` is relative to `GgufHeader.data_offset`."""

    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the contiguous dimension
    ggml_type: int
    offset: int
    nbytes: int

    @property
    def type_name(self) -> str:
        """The ggml type's name, such as `Q4_1`."""
        return GGML_TYPES[self.ggml_type].name


@dataclass(frozen=True)
class GgufHeader:
    """Everything before a GGUF file's tensor data, checked against the file's size."""

    version: int
    metadata: dict[str, object]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    file_bytes: int


class _Malformed(Exception):
    """Why a file is not a valid GGUF; `scan_gguf` prefixes the file's name."""


def scan_gguf(path: Path) -> GgufHeader:
    """Read and check a GGUF file's header; `InvalidModelFile` naming `path.name` if it is bad."""
    path = Path(path)
    with _open_regular(path) as raw:
        try:
            return _HeaderParser(_Window(raw, os.fstat(raw.fileno()).st_size)).header()
        except _Malformed as exc:
            raise InvalidModelFile(f"{path.name} is not a valid GGUF file: {exc}") from None
        except OSError as exc:  # an I/O error mid-read: a failing disk, a vanished mount
            raise _unreadable(path, exc) from None


def _open_regular(path: Path) -> FileIO:
    """Open a regular file for reading; anything else is refused before a blocking open."""
    try:
        _require_regular(path, os.stat(path).st_mode)
        # O_NONBLOCK: should the path become a FIFO after the stat, opening it still returns
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise _unreadable(path, exc) from None
    raw = FileIO(fd, "rb")
    try:
        _require_regular(path, os.fstat(fd).st_mode)
    except BaseException:
        raw.close()
        raise
    return raw


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _FILE_KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise InvalidModelFile(f"{path.name} is not a valid GGUF file: it is {kind}, not a regular file")


def _unreadable(path: Path, exc: OSError) -> InvalidModelFile:
    # strerror only: str(exc) would carry the full path
    return InvalidModelFile(f"{path.name} cannot be read: {exc.strerror or type(exc).__name__}")


def _quote(text: str) -> str:
    """A file-supplied string made safe and short for an error message."""
    return repr(text if len(text) <= 64 else text[:64] + "...")


class _Window:
    """Sequential reads of a file through a bounded buffer, refusing any read past its end.

    Invariant: the file's position is `_start + len(_buf)`.
    """

    def __init__(self, raw: FileIO, size: int) -> None:
        self._raw = raw
        self.size = size
        self._buf = b""
        self._start = 0  # file offset of _buf[0]
        self._pos = 0  # read position in _buf

    @property
    def offset(self) -> int:
        return self._start + self._pos

    @property
    def remaining(self) -> int:
        return self.size - self.offset

    def need(self, n: int, what: str) -> None:
        """Raise unless `n` more bytes lie before the end of the file."""
        if n > self.remaining:
            raise _Malformed(
                f"it is truncated: {what} needs {n} bytes at offset {self.offset}, "
                f"but the file is {self.size} bytes"
            )

    def unpack(self, fmt: struct.Struct, what: str) -> tuple[object, ...]:
        self._fill(fmt.size, what)
        values = fmt.unpack_from(self._buf, self._pos)
        self._pos += fmt.size
        return values

    def ints(self, fmt: struct.Struct, what: str) -> tuple[int, ...]:
        """`unpack` for a format of integer codes only."""
        return cast("tuple[int, ...]", self.unpack(fmt, what))

    def read(self, n: int, what: str) -> bytes:
        self._fill(n, what)
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        return data

    def skip(self, n: int, what: str) -> None:
        self.need(n, what)
        if self._pos + n <= len(self._buf):
            self._pos += n
            return
        self._start, self._buf, self._pos = self.offset + n, b"", 0
        self._raw.seek(self._start)

    def skip_buffered_strings(self, count: int, limit: int) -> int:
        """Skip up to `count` strings lying wholly in the buffer, returning how many were skipped.

        The fast path for vocabularies; a string over `limit` or across the buffer's end stops it.
        """
        buf, pos, end = self._buf, self._pos, len(self._buf)
        skipped = 0
        while skipped < count and pos + _U64.size <= end:
            (length,) = _U64.unpack_from(buf, pos)
            if length > limit or pos + _U64.size + length > end:
                break
            pos += _U64.size + length
            skipped += 1
        self._pos = pos
        return skipped

    def _fill(self, n: int, what: str) -> None:
        """Make `n` bytes available at `_pos`, reading at most max(n, one chunk) at a time."""
        if self._pos + n <= len(self._buf):
            return
        self.need(n, what)
        rest = self._buf[self._pos :]
        want = min(max(n, READ_CHUNK_BYTES), self.remaining) - len(rest)
        self._start, self._buf, self._pos = self.offset, rest + self._read_exactly(want), 0

    def _read_exactly(self, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            part = self._raw.read(n)
            if not part:
                raise _Malformed("the file shrank while it was being read")
            parts.append(part)
            n -= len(part)
        return b"".join(parts)


class _HeaderParser:
    """Walks a GGUF header through a `_Window`, raising `_Malformed` at the first impossibility."""

    def __init__(self, window: _Window) -> None:
        self.win = window
        self._kept_bytes = 0

    def header(self) -> GgufHeader:
        version, n_tensors, n_kv = self._preamble()
        metadata = self._metadata(n_kv)
        alignment = _alignment(metadata)
        tensors = tuple(self._tensor(index, alignment) for index in range(n_tensors))
        data_offset = -(-self.win.offset // alignment) * alignment
        _check_tensor_data(tensors, data_offset, self.win.size)
        return GgufHeader(version, metadata, tensors, data_offset, self.win.size)

    # -- preamble --------------------------------------------------------------------

    def _preamble(self) -> tuple[int, int, int]:
        if self.win.size < len(GGUF_MAGIC):
            raise _Malformed("the file is empty" if self.win.size == 0 else f"the file is only {self.win.size} bytes")
        magic = self.win.read(len(GGUF_MAGIC), "the magic")
        if magic != GGUF_MAGIC:
            raise _Malformed(f"it starts with {magic!r}, not the GGUF magic {GGUF_MAGIC!r}")
        (version,) = self.win.ints(_U32, "the version")
        _check_version(version)
        n_tensors, n_kv = self.win.ints(_COUNTS, "the tensor and metadata counts")
        self._check_counts(n_tensors, n_kv)
        return version, n_tensors, n_kv

    def _check_counts(self, n_tensors: int, n_kv: int) -> None:
        """Each entry takes some minimum number of bytes, so the file's size bounds the counts."""
        for what, count, cap, least in (
            ("metadata count", n_kv, MAX_KV_COUNT, MIN_KV_BYTES),
            ("tensor count", n_tensors, MAX_TENSOR_COUNT, MIN_TENSOR_INFO_BYTES),
        ):
            if count * least > self.win.remaining:
                raise _Malformed(f"{what} {count} is impossible for a file of {self.win.size} bytes")
            if count > cap:
                raise _Malformed(f"{what} {count} is over lampstand's limit of {cap}")
        if n_kv * MIN_KV_BYTES + n_tensors * MIN_TENSOR_INFO_BYTES > self.win.remaining:
            raise _Malformed(
                f"{n_kv} metadata entries and {n_tensors} tensors cannot fit in a file of {self.win.size} bytes"
            )

    # -- metadata --------------------------------------------------------------------

    def _metadata(self, n_kv: int) -> dict[str, object]:
        metadata: dict[str, object] = {}
        for index in range(n_kv):
            key = self._string(f"metadata key {index}", limit=MAX_KEY_BYTES)
            if key in metadata:
                raise _Malformed(f"metadata key {_quote(key)} appears twice")
            (value_type,) = self.win.ints(_U32, f"the value type of {_quote(key)}")
            metadata[key] = self._value(value_type, f"the value of {_quote(key)}")
        return metadata

    def _value(self, value_type: int, what: str) -> object:
        if value_type == TYPE_STRING:
            return self._string(what)
        if value_type == TYPE_ARRAY:
            return self._array(what)
        return self.win.unpack(_scalar(value_type, what), what)[0]

    def _string(self, what: str, *, limit: int = MAX_STRING_BYTES, keep: bool = True) -> str:
        """A length-prefixed UTF-8 string; with `keep=False` it is skipped and "" returned."""
        (length,) = self.win.ints(_U64, f"the length of {what}")
        if length > self.win.remaining:
            raise _Malformed(f"{what} claims {length} bytes, more than the {self.win.remaining} left in the file")
        if length > limit:
            raise _Malformed(f"{what} claims {length} bytes, over lampstand's limit of {limit}")
        if not keep:
            self.win.skip(length, what)
            return ""
        self._keep(KEPT_OBJECT_BYTES + length)
        return self.win.read(length, what).decode("utf-8", errors="replace")

    def _keep(self, nbytes: int) -> None:
        """Charge memory for values kept in the header, so many small values cannot add up."""
        self._kept_bytes += nbytes
        if self._kept_bytes > MAX_KEPT_BYTES:
            raise _Malformed(f"its metadata would take more than lampstand's limit of {MAX_KEPT_BYTES} bytes")

    def _array(self, what: str) -> GgufArray:
        item_type, length = self.win.ints(_ARRAY_HEADER, f"the array header of {what}")
        if item_type == TYPE_ARRAY:
            raise _Malformed(f"{what} is an array of arrays, which GGUF readers do not support")
        least = _U64.size if item_type == TYPE_STRING else _scalar(item_type, f"an item of {what}").size
        if length * least > self.win.remaining:
            raise _Malformed(f"{what} claims {length} items, impossible in the {self.win.remaining} bytes left")
        if length > MAX_ARRAY_LENGTH:
            raise _Malformed(f"{what} claims {length} items, over lampstand's limit of {MAX_ARRAY_LENGTH}")
        if length > MAX_KEPT_ARRAY_ITEMS:
            self._skip_items(item_type, length, least, what)
            return GgufArray(item_type, length, None)
        if item_type == TYPE_STRING:
            return GgufArray(item_type, length, tuple(self._string(f"an item of {what}") for _ in range(length)))
        self._keep(length * KEPT_OBJECT_BYTES)
        values = struct.unpack(f"<{length}{_SCALAR_CODES[item_type]}", self.win.read(length * least, what))
        return GgufArray(item_type, length, values)

    def _skip_items(self, item_type: int, length: int, item_bytes: int, what: str) -> None:
        if item_type != TYPE_STRING:
            self.win.skip(length * item_bytes, what)
            return
        item, left = f"an item of {what}", length
        while left:
            left -= self.win.skip_buffered_strings(left, MAX_STRING_BYTES)
            if left:  # the next string crosses the buffer's end or is too long: the checked path
                self._string(item, keep=False)
                left -= 1

    # -- tensor table ----------------------------------------------------------------

    def _tensor(self, index: int, alignment: int) -> TensorInfo:
        name = self._string(f"the name of tensor {index}", limit=MAX_TENSOR_NAME_BYTES)
        label = f"tensor {_quote(name)}"
        (n_dims,) = self.win.ints(_U32, f"the dimension count of {label}")
        if n_dims > MAX_TENSOR_DIMS:
            raise _Malformed(f"{label} claims {n_dims} dimensions; ggml allows at most {MAX_TENSOR_DIMS}")
        shape = self.win.ints(struct.Struct(f"<{n_dims}Q"), f"the shape of {label}")
        ggml_type, offset = self.win.ints(_TYPE_AND_OFFSET, f"the type and offset of {label}")
        nbytes = _tensor_nbytes(label, shape, ggml_type)
        if offset % alignment:
            raise _Malformed(f"{label} starts at data offset {offset}, not a multiple of the alignment {alignment}")
        return TensorInfo(name, shape, ggml_type, offset, nbytes)


def _check_version(version: int) -> None:
    if version in SUPPORTED_VERSIONS:
        return
    swapped = _U32.unpack(struct.pack(">I", version))[0]
    hint = "; it looks big-endian, which lampstand does not read" if swapped in SUPPORTED_VERSIONS else ""
    raise _Malformed(f"version {version} is not supported (lampstand reads GGUF versions 2 and 3){hint}")


def _scalar(value_type: int, what: str) -> struct.Struct:
    fmt = _SCALARS.get(value_type)
    if fmt is None:
        raise _Malformed(f"{what} has unknown value type {value_type}")
    return fmt


def _alignment(metadata: dict[str, object]) -> int:
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise _Malformed(f"general.alignment {alignment!r} is not a positive power of two")
    return alignment


def _tensor_nbytes(label: str, shape: tuple[int, ...], ggml_type: int) -> int:
    """Bytes of a tensor's data, from its shape and its ggml type's block layout."""
    kind = GGML_TYPES.get(ggml_type)
    if kind is None:
        raise _Malformed(f"{label} has unknown ggml type {ggml_type}")
    if any(dim <= 0 or dim > MAX_TENSOR_ELEMENTS for dim in shape):
        raise _Malformed(f"{label} has shape {list(shape)}; every dimension must be positive")
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise _Malformed(f"{label} has shape {list(shape)}, more elements than ggml can count")
    columns = shape[0] if shape else 1
    if columns % kind.block_size:
        raise _Malformed(
            f"{label} has rows of {columns} elements, not a multiple of the {kind.name} block size {kind.block_size}"
        )
    return columns // kind.block_size * kind.type_size * math.prod(shape[1:])


def _check_tensor_data(tensors: tuple[TensorInfo, ...], data_offset: int, size: int) -> None:
    """Tensor names are unique, every tensor's bytes lie inside the file, and no two share a byte."""
    if tensors and data_offset > size:
        raise _Malformed(f"its tensor data would start at byte {data_offset}, past the end of the file ({size} bytes)")
    names: set[str] = set()
    for tensor in tensors:
        if tensor.name in names:
            raise _Malformed(f"tensor {_quote(tensor.name)} appears twice")
        names.add(tensor.name)
    previous: TensorInfo | None = None
    for tensor in sorted(tensors, key=lambda t: t.offset):
        end = data_offset + tensor.offset + tensor.nbytes
        if end > size:
            raise _Malformed(
                f"tensor {_quote(tensor.name)} ends at byte {end}, past the end of the file ({size} bytes)"
            )
        if previous is not None and tensor.offset < previous.offset + previous.nbytes:
            raise _Malformed(f"tensor {_quote(tensor.name)} overlaps tensor {_quote(previous.name)}")
        previous = tensor
