"""A direct reader for the store's params column chunks, at about memory-copy speed.

pyarrow decodes a list column at roughly 1 GB/s per core, most of it rebuilding list offsets
from repetition and definition levels that, for a fixed-size list without nulls, say nothing.
The store writes its params columns uncompressed, PLAIN-encoded, in data pages v2 (see
writer.write_options). Such a page is a Thrift header, then the levels (uncompressed, their byte
lengths in the header), then the raw little-endian float32 values. This module parses the page
headers (Thrift compact protocol) and reads each page's values straight into place. Any other layout
(compression, dictionary or v1 pages, nulls, another encoding) makes it return False, and the
caller decodes with pyarrow instead: files written by other tools still read, just slower.
"""
from __future__ import annotations

import sys

import numpy as np

DATA_PAGE_V2 = 3  # parquet.thrift PageType
PLAIN = 0  # parquet.thrift Encoding
HEADER_PROBE = 1024  # bytes read to parse a page header; its statistics hold two 4-byte floats


class _Compact:
    """Just enough of the Thrift compact protocol to read a struct, skipping what is not needed."""

    def __init__(self, buf: memoryview, pos: int):
        self.buf, self.pos = buf, pos

    def byte(self) -> int:
        self.pos += 1
        return self.buf[self.pos - 1]

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, kind: int):
        if kind in (1, 2):  # a struct field's bool lives in its type nibble
            return kind == 1
        if kind == 3:
            return self.byte()
        if kind in (4, 5, 6):
            return self.zigzag()
        if kind in (7, 8):  # double, binary: skipped
            size = 8 if kind == 7 else self.varint()  # read the length before moving on
            self.pos += size
            return None
        if kind in (9, 10):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            return [self.byte() if head & 15 in (1, 2) else self.value(head & 15) for _ in range(size)]
        if kind == 11:
            size = self.varint()
            kinds = self.byte() if size else 0
            return [(self.value(kinds >> 4), self.value(kinds & 15)) for _ in range(size)]
        if kind == 12:
            return self.struct()
        raise ValueError(f"not a Thrift compact type: {kind}")

    def struct(self) -> dict[int, object]:
        fields, last = {}, 0
        while (head := self.byte()) != 0:
            last = last + (head >> 4) if head >> 4 else self.zigzag()
            fields[last] = self.value(head & 15)
        return fields


def _page_span(head: memoryview) -> tuple[int, int, int]:
    """From the bytes at a page's start: (values offset, value count, offset of the next page).
    LookupError for a page this reader does not handle; IndexError if `head` is too short."""
    reader = _Compact(head, 0)
    header = reader.struct()
    v2, size = header.get(8), header[3]  # data_page_header_v2, compressed_page_size
    if header[1] != DATA_PAGE_V2 or v2 is None or v2.get(2) or v2.get(4) != PLAIN:
        raise LookupError("not an uncompressed PLAIN v2 page without nulls")
    start = reader.pos + v2[5] + v2[6]  # after the definition and repetition levels
    if reader.pos + size - start != 4 * v2[1]:
        raise LookupError("page size does not match its value count")
    return start, v2[1], reader.pos + size


def copy_plain_floats(source, column_meta, out: np.ndarray) -> bool:
    """Read one column chunk's float32 values into the contiguous 1-D array `out`, straight from
    the file (like np.load); False, with `out` in an undefined state, when the chunk is not in
    the layout this reader handles.

    source: a pyarrow RandomAccessFile of the Parquet file; column_meta: its
    ColumnChunkMetaData (pyarrow.parquet.FileMetaData.row_group(g).column(c)).
    """
    m = column_meta
    if (m.compression != "UNCOMPRESSED" or m.physical_type != "FLOAT" or m.has_dictionary_page
            or sys.byteorder != "little" or not out.flags.c_contiguous):
        return False
    pos, end, offset = m.data_page_offset, m.data_page_offset + m.total_compressed_size, 0
    try:
        while pos < end:
            start, count, step = _page_span(memoryview(source.read_at(min(HEADER_PROBE, end - pos), pos)))
            if offset + count > out.size:
                return False
            source.seek(pos + start)
            if source.readinto(memoryview(out[offset : offset + count]).cast("B")) != 4 * count:
                return False
            offset, pos = offset + count, pos + step
    except (LookupError, KeyError, IndexError, ValueError):
        return False
    return offset == out.size
