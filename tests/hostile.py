"""Hostile CBOR that cbor2 accepts and bfs-smr's decoder must refuse at once (issue 11),
shared by the tests of each surface that reads untrusted bytes."""

from __future__ import annotations

from bfs_smr import encode


def shared_reference_bomb(levels: int) -> bytes:
    """An array of ``levels`` shareable arrays (tag 28), each holding two references
    (tag 29) to the one before it: a few bytes a level, 2**levels paths through the value
    cbor2 decodes, so a tree walk over it never ends (defect 1)."""
    out = [bytes([0x98, levels]), bytes.fromhex("d81c820000")]  # shareable [0, 0]
    for i in range(levels - 1):
        ref = bytes.fromhex("d81d") + encode(i)  # a reference to shared value i
        out.append(bytes.fromhex("d81c82") + ref + ref)
    return b"".join(out)


def colliding_key_map(count: int) -> bytes:
    """A CBOR map of ``count`` bignum keys (tag 2) that share one Python hash: multiples
    of 2**61 - 1, quadratic to build as a dict (defect 2)."""
    modulus = (1 << 61) - 1
    head = bytes([0xB9]) + count.to_bytes(2, "big")
    items = []
    for i in range(1, count + 1):
        key = (i * modulus).to_bytes(16, "big").lstrip(b"\x00")
        items.append(bytes([0xC2, 0x40 + len(key)]) + key + b"\x00")
    return head + b"".join(items)
