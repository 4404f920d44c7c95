"""The Xet side of the loopback Hub: the token handshake and a CAS that checks what it stores.

`hf_xet` asks the Hub for a write token (`/api/{type}s/{repo}/xet-write-token/{rev}`, the CAS
URL and token come back in `X-Xet-*` headers), then talks to the CAS: a global-dedup lookup
per chunk (`GET /v1/chunks/default/{hash}`, 404 = unknown), an upload grant per xorb
(`POST /v1/xorb-grants/...`; this CAS answers 404, which makes the client send the xorb
itself to `POST /v1/xorbs/default/{hash}`), and one shard (`POST /v2/shards`, answered with
NDJSON progress frames). The shard names, per file, the xorb chunk ranges it is made of and
its sha256; this CAS rebuilds every file from the xorbs it received, checks that sha256 and
only then lets a commit reference it, as the Hub does. Formats: xet-core's spec/xorb.md and
spec/shard.md (hashes are four little-endian u64 words).
"""

from __future__ import annotations

import hashlib
import struct

SHARD_HEADER = 48
ENTRY = 48
FLAG_VERIFICATION = 0x80000000
FLAG_METADATA_EXT = 0x40000000
BOOKEND = b"\xff" * 32
LZ4_FRAME_MAGIC = b"\x04\x22\x4d\x18"


class CasError(Exception):
    """The upload is not what the CAS accepts (missing xorb, wrong sha256, bad format)."""


def xet_hex(raw: bytes) -> str:
    """A 32-byte Xet hash as its hex string: each of the four u64 words little-endian."""
    return "".join(raw[i:i + 8][::-1].hex() for i in range(0, 32, 8))


def xorb_chunks(body: bytes) -> list[bytes]:
    """The decompressed chunks of a serialized xorb (8-byte header + data per chunk)."""
    chunks, at = [], 0
    while at < len(body):
        if len(body) - at < 8 or body[at] != 0:
            raise CasError(f"bad chunk header at byte {at}")
        compressed = int.from_bytes(body[at + 1:at + 4], "little")
        scheme = body[at + 4]
        size = int.from_bytes(body[at + 5:at + 8], "little")
        data = body[at + 8:at + 8 + compressed]
        at += 8 + compressed
        chunk = _decompress(data, scheme)
        if len(chunk) != size:
            raise CasError(f"chunk decompressed to {len(chunk)} bytes, header says {size}")
        chunks.append(chunk)
    return chunks


def _decompress(data: bytes, scheme: int) -> bytes:
    if scheme == 0:
        return data
    if scheme not in (1, 2):
        raise CasError(f"unknown compression scheme {scheme}")
    raw = lz4_frame(data) if data.startswith(LZ4_FRAME_MAGIC) else lz4_block(data)
    return raw if scheme == 1 else _ungroup4(raw)


def _ungroup4(grouped: bytes) -> bytes:
    n = len(grouped)
    sizes = [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
    out = bytearray(n)
    start = 0
    for i, size in enumerate(sizes):
        out[i::4] = grouped[start:start + size]
        start += size
    return bytes(out)


def lz4_block(src: bytes) -> bytes:
    """Decode one LZ4 block (token, literals, 2-byte offset, match; lengths extended by 255s)."""
    out, i = bytearray(), 0
    while i < len(src):
        token = src[i]
        i += 1
        literal, i = _lz4_length(src, i, token >> 4)
        out += src[i:i + literal]
        i += literal
        if i >= len(src):
            break
        offset = src[i] | src[i + 1] << 8
        i += 2
        match, i = _lz4_length(src, i, token & 15)
        match += 4
        start = len(out) - offset
        if offset >= match:
            out += out[start:start + match]
        else:
            for k in range(match):
                out.append(out[start + k])
    return bytes(out)


def _lz4_length(src: bytes, i: int, length: int) -> tuple[int, int]:
    if length == 15:
        while True:
            extra = src[i]
            i += 1
            length += extra
            if extra != 255:
                break
    return length, i


def lz4_frame(src: bytes) -> bytes:
    flags = src[4]
    i = 6 + (8 if flags & 0x08 else 0) + (4 if flags & 0x01 else 0) + 1
    out = bytearray()
    while True:
        (size,) = struct.unpack_from("<I", src, i)
        i += 4
        if size == 0:
            return bytes(out)
        block = src[i:i + (size & 0x7FFFFFFF)]
        i += (size & 0x7FFFFFFF) + (4 if flags & 0x10 else 0)
        out += block if size & 0x80000000 else lz4_block(block)


def shard_files(shard: bytes) -> list[tuple[str | None, list[tuple[str, int, int, int]]]]:
    """Per file in a shard's file-info section: (sha256 or None, [(xorb hash, first, end, bytes)])."""
    files, at = [], SHARD_HEADER
    while at + ENTRY <= len(shard):
        if shard[at:at + 32] == BOOKEND:
            return files
        flags, count = struct.unpack_from("<II", shard, at + 32)
        at += ENTRY
        terms = []
        for _ in range(count):
            flags_entry, size, first, end = struct.unpack_from("<IIII", shard, at + 32)
            terms.append((xet_hex(shard[at:at + 32]), first, end, size))
            at += ENTRY
        if flags & FLAG_VERIFICATION:
            at += ENTRY * count
        sha256 = None
        if flags & FLAG_METADATA_EXT:
            sha256 = xet_hex(shard[at:at + 32])
            at += ENTRY
        files.append((sha256, terms))
    raise CasError("shard file-info section has no bookend")


def rebuild_files(shard: bytes, xorbs: dict[str, list[bytes]]) -> dict[str, bytes]:
    """sha256 -> content for every file the shard describes, checked against its sha256."""
    rebuilt = {}
    for sha256, terms in shard_files(shard):
        parts = []
        for xorb, first, end, size in terms:
            if xorb not in xorbs:
                raise CasError(f"shard references xorb {xorb[:12]} that was never uploaded")
            segment = b"".join(xorbs[xorb][first:end])
            if len(segment) != size:
                raise CasError(f"xorb {xorb[:12]} chunks {first}-{end} hold {len(segment)} bytes, not {size}")
            parts.append(segment)
        content = b"".join(parts)
        if sha256 is None:
            continue
        if hashlib.sha256(content).hexdigest() != sha256:
            raise CasError(f"file rebuilt from the shard does not match its sha256 {sha256[:12]}")
        rebuilt[sha256] = content
    return rebuilt
