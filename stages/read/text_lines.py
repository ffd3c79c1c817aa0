"""Text shards as UTF-8 lines, in bounded memory, whatever the tool that wrote them.

`text_blocks` yields a file's bytes as UTF-8 in blocks: a UTF-8 byte-order mark at the start is dropped
(spreadsheet and Windows exports start with one), and a UTF-16 or UTF-32 file (told by its byte-order mark,
as PowerShell's `Out-File` writes) is transcoded on the way. `bounded_lines` splits the blocks at "\\n" only
and never holds more than `max_bytes` of one line: a longer line is read past and handed on as an
`Overlong` marker, so a 100 MB line costs no more memory than a short one and becomes that line's error.
Decoding each line (and reporting invalid UTF-8 with its byte offset) is the caller's job.
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import BinaryIO, Iterator

UTF8_BOM = codecs.BOM_UTF8
#: Byte-order marks of the encodings transcoded to UTF-8 (UTF-32 first: its LE mark starts like UTF-16's).
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
             (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class Overlong:
    """A line that was longer than the limit: its size, read past and never held whole."""
    size: int
    limit: int


def text_blocks(f: BinaryIO, block: int = BLOCK_BYTES) -> Iterator[bytes]:
    """The file's content as UTF-8 bytes, block by block (leading UTF-8 BOM dropped, UTF-16/32 transcoded).
    Lone surrogates of a UTF-16 file pass through as bytes that are not valid UTF-8, so only their line
    becomes an error."""
    read = getattr(f, "read1", f.read)   # a decompressor's read1: what one raw read gave, so a stream that
    head = b""                           # breaks mid-way loses no decoded bytes before the break
    while len(head) < 4:
        more = read(block)
        if not more:
            break
        head += more
    encoding = next((enc for bom, enc in WIDE_BOMS if head.startswith(bom)), None)
    if encoding is None:
        yield head.removeprefix(UTF8_BOM)
        yield from iter(lambda: read(block), b"")
        return
    bom = next(b for b, enc in WIDE_BOMS if enc == encoding)
    decoder = codecs.getincrementaldecoder(encoding)(errors="surrogatepass")
    chunk = head[len(bom):]
    while chunk:
        yield decoder.decode(chunk).encode("utf-8", errors="surrogatepass")
        chunk = read(block)
    yield decoder.decode(b"", final=True).encode("utf-8", errors="surrogatepass")


def bounded_lines(blocks: Iterator[bytes], max_bytes: int) -> Iterator[bytes | Overlong]:
    """Lines (without their "\\n") of a block stream; a line over `max_bytes` is an `Overlong` instead."""
    parts: list[bytes] = []     # the current line's pieces so far
    size = 0                    # its length; once over max_bytes its pieces are dropped and only counted
    for block in blocks:
        pieces = block.split(b"\n")
        for piece in pieces[:-1]:
            size += len(piece)
            if size > max_bytes:
                yield Overlong(size, max_bytes)
            else:
                yield b"".join(parts) + piece if parts else piece
            parts, size = [], 0
        tail = pieces[-1]
        size += len(tail)
        if size > max_bytes:
            parts = []
        elif tail:
            parts.append(tail)
    if size > max_bytes:
        yield Overlong(size, max_bytes)
    elif parts:
        yield b"".join(parts)
