"""The loopback CAS's decoders (xet-core spec/xorb.md, spec/shard.md) on hand-made inputs; the
upload tests check them end to end (every file rebuilt from xorbs must match its sha256)."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hub_xet import BOOKEND, CasError, lz4_block, lz4_frame, rebuild_files, xet_hex, xorb_chunks


def test_lz4_block_literals_and_overlapping_matches():
    # token 0x32: 3 literals "abc", then a match of 2 + 4 = 6 bytes at offset 3 (an overlapping copy)
    assert lz4_block(b"\x32abc\x03\x00\x10x") == b"abcabcabcx"
    # a literal length of 15 + 255 + 2 = 272 (extension bytes), a match length of 15 + 4 + 0 at offset 1
    literals = bytes(range(256)) + bytes(16)
    assert lz4_block(b"\xf0\xff\x02" + literals) == literals
    assert lz4_block(b"\x1fz\x01\x00\x00") == b"z" * (1 + 15 + 4)


def test_lz4_frame_with_a_stored_block_and_the_byte_grouped_scheme():
    raw = b"ABCDabcd0123"
    frame = b"\x04\x22\x4d\x18" + b"\x60\x40\x82" + struct.pack("<I", len(raw) | 0x80000000) + raw + b"\0\0\0\0"
    assert lz4_frame(frame) == raw
    grouped = raw[0::4] + raw[1::4] + raw[2::4] + raw[3::4]              # bytes 1 of each 4, then 2, 3, 4
    header = bytes([0]) + len(frame).to_bytes(3, "little")
    stored = bytes([0]) + (5).to_bytes(3, "little") + bytes([0]) + (5).to_bytes(3, "little") + b"hello"
    bg4 = header + bytes([2]) + len(raw).to_bytes(3, "little") + frame.replace(raw, grouped)
    assert xorb_chunks(stored + bg4) == [b"hello", raw]
    with pytest.raises(CasError, match="unknown compression scheme 7"):
        xorb_chunks(bytes([0, 1, 0, 0, 7, 1, 0, 0]) + b"x")


def test_shards_rebuild_files_and_refuse_a_wrong_sha256_or_a_missing_xorb():
    content = b"hello" + b"world"
    xorb = bytes(range(32))
    sha = hashlib.sha256(content).digest()
    words = b"".join(sha[i:i + 8][::-1] for i in range(0, 32, 8))      # four little-endian u64 words
    assert xet_hex(words) == sha.hex()
    file_header = b"\x11" * 32 + struct.pack("<II", 0x40000000, 1) + bytes(8)
    entry = xorb + struct.pack("<IIII", 0, len(content), 0, 2)
    shard = bytes(48) + file_header + entry + words + bytes(16) + BOOKEND + bytes(16)
    xorbs = {xet_hex(xorb): [b"hello", b"world"]}
    assert rebuild_files(shard, xorbs) == {sha.hex(): content}
    with pytest.raises(CasError, match="does not match its sha256"):
        rebuild_files(shard, {xet_hex(xorb): [b"hello", b"WORLD"]})
    with pytest.raises(CasError, match="never uploaded"):
        rebuild_files(shard, {})
