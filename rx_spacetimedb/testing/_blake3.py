"""BLAKE3 (hash mode, 32-byte digest) in pure Python, for deriving identities as the server does.

The server derives an identity from a token's ``(iss, sub)`` with BLAKE3 (``Identity::from_claims``);
the standard library has no BLAKE3, and identities are tens of bytes, so a small, slow, dependency-free
implementation of the specification is enough. Checked against the official test vectors in
``tests/testing/test_blake3.py``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

__all__ = ["blake3"]

_IV = (0x6A09E667, 0xBB67AE85, 0x3C6EF372, 0xA54FF53A, 0x510E527F, 0x9B05688C, 0x1F83D9AB, 0x5BE0CD19)
_PERMUTATION = (2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8)
_CHUNK_START, _CHUNK_END, _PARENT, _ROOT = 1, 2, 4, 8
_BLOCK = 64
_CHUNK = 1024
_MASK = 0xFFFFFFFF


def _g(s: list[int], a: int, b: int, c: int, d: int, x: int, y: int) -> None:
    """The quarter-round mixing function on four state words and two message words."""
    s[a] = (s[a] + s[b] + x) & _MASK
    t = s[d] ^ s[a]
    s[d] = ((t >> 16) | (t << 16)) & _MASK
    s[c] = (s[c] + s[d]) & _MASK
    t = s[b] ^ s[c]
    s[b] = ((t >> 12) | (t << 20)) & _MASK
    s[a] = (s[a] + s[b] + y) & _MASK
    t = s[d] ^ s[a]
    s[d] = ((t >> 8) | (t << 24)) & _MASK
    s[c] = (s[c] + s[d]) & _MASK
    t = s[b] ^ s[c]
    s[b] = ((t >> 7) | (t << 25)) & _MASK


def _compress(
    cv: tuple[int, ...], block: tuple[int, ...], counter: int, length: int, flags: int
) -> list[int]:
    """The compression function: 7 rounds over one 64-byte block; the 16 output words."""
    s = [*cv, *_IV[:4], counter & _MASK, (counter >> 32) & _MASK, length, flags]
    m = block
    for round_ in range(7):
        _g(s, 0, 4, 8, 12, m[0], m[1])
        _g(s, 1, 5, 9, 13, m[2], m[3])
        _g(s, 2, 6, 10, 14, m[4], m[5])
        _g(s, 3, 7, 11, 15, m[6], m[7])
        _g(s, 0, 5, 10, 15, m[8], m[9])
        _g(s, 1, 6, 11, 12, m[10], m[11])
        _g(s, 2, 7, 8, 13, m[12], m[13])
        _g(s, 3, 4, 9, 14, m[14], m[15])
        if round_ < 6:
            m = tuple(m[i] for i in _PERMUTATION)
    return [s[i] ^ s[i + 8] for i in range(8)] + [s[i + 8] ^ cv[i] for i in range(8)]


def _words(block: bytes) -> tuple[int, ...]:
    return struct.unpack("<16I", block.ljust(_BLOCK, b"\0"))


@dataclass(frozen=True, slots=True)
class _Output:
    """A node's last compression, not yet run: as a chaining value, or with ROOT as the digest."""

    cv: tuple[int, ...]
    block: tuple[int, ...]
    counter: int
    length: int
    flags: int

    def chaining_value(self) -> tuple[int, ...]:
        return tuple(_compress(self.cv, self.block, self.counter, self.length, self.flags)[:8])

    def root(self) -> bytes:
        words = _compress(self.cv, self.block, 0, self.length, self.flags | _ROOT)[:8]
        return struct.pack("<8I", *words)


def _chunk(data: bytes, counter: int) -> _Output:
    """One chunk (up to 1024 bytes, at least one block even when empty)."""
    blocks = [data[i : i + _BLOCK] for i in range(0, len(data), _BLOCK)] or [b""]
    cv: tuple[int, ...] = _IV
    for index, block in enumerate(blocks[:-1]):
        cv = tuple(_compress(cv, _words(block), counter, _BLOCK, _CHUNK_START if index == 0 else 0)[:8])
    start = _CHUNK_START if len(blocks) == 1 else 0
    return _Output(cv, _words(blocks[-1]), counter, len(blocks[-1]), start | _CHUNK_END)


def _subtree(data: bytes, counter: int) -> _Output:
    """A subtree: the left side holds the largest power-of-two number of whole chunks, the right the rest."""
    if len(data) <= _CHUNK:
        return _chunk(data, counter)
    left_chunks = 1 << (((len(data) - 1) // _CHUNK).bit_length() - 1)
    split = left_chunks * _CHUNK
    left = _subtree(data[:split], counter).chaining_value()
    right = _subtree(data[split:], counter + left_chunks).chaining_value()
    return _Output(_IV, left + right, 0, _BLOCK, _PARENT)


def blake3(data: bytes) -> bytes:
    """The 32-byte BLAKE3 hash of ``data`` (``blake3::hash`` in Rust)."""
    return _subtree(bytes(data), 0).root()
