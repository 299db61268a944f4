"""Exact and near-duplicate detection.

Exact: a 64-bit hash of the normalised text, lower-cased with whitespace collapsed; the first record of each
group (in input order) is kept.

Near: MinHash (Broder 1997) signatures from datasketch over word n-gram shingles, then locality-sensitive
hashing in bands. datasketch's `MinHashLSH` keeps every band of every record in Python dicts (about 1.5 KB a
record), more than the records themselves on a large corpus; so, as datatrove does, we keep one 64-bit hash
per band in a numpy array, sort each band column, and take records that share a bucket as candidate pairs.
Each candidate pair is verified by the Jaccard similarity its two signatures estimate, and verified pairs
are joined into clusters (union-find); a cluster keeps its earliest record.

The band/row split for a threshold comes from datasketch (`_optimal_param`, the integral that minimises the
weighted false positive and negative probability, as MinHashLSH chooses it).

>>> config = DedupConfig()
>>> a = signature("the quick brown fox jumps over the lazy dog near the river bank today", config)
>>> b = signature("the quick brown fox jumps over the lazy dog near the river bank tonight", config)
>>> round(float(jaccard(a, b)), 1) >= 0.7
True
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np
import xxhash

from seedbed.curate.config import DedupConfig

_WORDS = re.compile(r"\w+")
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 32) - 1)


def exact_key(text: str) -> int:
    """64-bit hash of the text with case and whitespace differences removed."""
    return xxhash.xxh64_intdigest(" ".join(text.lower().split()).encode())


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from datasketch import MinHash

    # datasketch's own permutation parameters, drawn once per process (datasketch draws them again for every
    # MinHash object, which costs more than hashing a short record).
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme="legacy").permutations
    return a, b


def shingles(text: str, size: int) -> set[bytes]:
    words = _WORDS.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


def signature(text: str, config: DedupConfig) -> np.ndarray:
    """The text's MinHash signature, (num_perm,) uint32: exactly what `datasketch.MinHash(scheme="legacy",
    hashfunc=xxhash.xxh32_intdigest).update_batch(shingles)` computes (a test checks), without building a
    MinHash object per record; xxhash32 replaces datasketch's default sha1, which is several times slower."""
    a, b = _permutations(config.num_perm, config.seed)
    hashes = np.fromiter((xxhash.xxh32_intdigest(s) for s in shingles(text, config.shingle_size)), dtype=np.uint64)
    # (shingles, num_perm): the universal hash (a*h + b) mod p, kept to 32 bits, as datasketch's legacy scheme
    # (its uint64 products wrap around; ours wrap identically).
    with np.errstate(over="ignore"):
        permuted = np.bitwise_and((hashes[:, None] * a + b) % _MERSENNE, _MAX_HASH)
    return permuted.min(axis=0).astype(np.uint32)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity estimated by two signatures: the share of equal minimum hashes."""
    return float(np.count_nonzero(a == b)) / len(a)


@lru_cache(maxsize=8)
def bands_and_rows(threshold: float, num_perm: int) -> tuple[int, int]:
    from datasketch.lsh import _optimal_param

    return _optimal_param(threshold, num_perm, 0.5, 0.5)


def band_keys(signatures: np.ndarray, config: DedupConfig) -> np.ndarray:
    """(records, bands) uint64: one hash per LSH band of each signature (records, num_perm)."""
    bands, rows = bands_and_rows(config.threshold, config.num_perm)
    view = signatures[:, : bands * rows].astype(np.uint64).reshape(len(signatures), bands, rows)
    # A random linear combination mod 2**64 of a band's rows: equal bands give equal keys, and unequal ones
    # collide with probability ~2**-64 (the multipliers are odd, so each row's value survives).
    multipliers = np.random.default_rng(config.seed).integers(1, 2**63, rows, dtype=np.uint64) * 2 + 1
    with np.errstate(over="ignore"):
        return (view * multipliers).sum(axis=2, dtype=np.uint64)


class _UnionFind:
    def __init__(self):
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller index (earlier record) becomes the root, so a cluster keeps its first record
            self.parent[max(ra, rb)] = min(ra, rb)


def near_duplicate_clusters(keys: np.ndarray, signatures, threshold: float, all_pairs_up_to: int = 64
                            ) -> dict[int, tuple[int, float]]:
    """Records to drop as near-duplicates: {index: (index of the cluster's kept record, similarity)}.

    `keys` is (records, bands) from `band_keys`; `signatures` is indexable by record (an array or a memmap).
    Candidates sharing a bucket are verified pairwise when the bucket is small, else against its first record.
    """
    found = _UnionFind()
    similarity: dict[int, float] = {}
    checked: set[tuple[int, int]] = set()
    for band in range(keys.shape[1]):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = order[start:end]
            firsts = members if end - start <= all_pairs_up_to else members[:1]
            for i, first in enumerate(firsts):
                for other in members[i + 1:]:
                    pair = (int(min(first, other)), int(max(first, other)))
                    if pair in checked or found.find(pair[0]) == found.find(pair[1]):
                        continue
                    checked.add(pair)
                    s = jaccard(signatures[pair[0]], signatures[pair[1]])
                    if s >= threshold:
                        found.union(*pair)
                        similarity[pair[1]] = max(similarity.get(pair[1], 0.0), s)
    return {i: (found.find(i), similarity.get(i, threshold)) for i in list(found.parent) if found.find(i) != i}
