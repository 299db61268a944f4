"""Exact and near-duplicate detection.

Exact: a 64-bit hash of the normalised text, lower-cased with whitespace collapsed; the first record of each
group (in input order) is kept.

Near: MinHash (Broder 1997) signatures from datasketch over word n-gram shingles, then locality-sensitive
hashing in bands. datasketch's `MinHashLSH` keeps every band of every record in Python dicts (about 1.5 KB a
record), more than the records themselves on a large corpus; so, as datatrove does, we keep one 64-bit hash
per band in a numpy array, sort each band column, and take records that share a bucket as candidate pairs.
Each candidate pair is verified by the Jaccard similarity its two signatures estimate, and a record is dropped
when it is a near-duplicate of an earlier record that is kept (no chaining through dropped records). Records
with answers (instruction, chat) are verified side by side: the prompts must be nearly the same
(`prompt_threshold`) and the answers similar (`threshold`).

The band/row split for a threshold comes from datasketch (`_optimal_param`, the integral that minimises the
weighted false positive and negative probability, as MinHashLSH chooses it).

Templates. Instruction data is often built from a template: one long instruction with the varying request at
its end, a shared system prompt, the same JSON keys in every answer. Shingles of the template are shared by every
record, so two records that differ in all they say ("What will the weather be in Kokhanok" and "... in Anchorage")
can still agree on 90% of their shingles. So a record's shingles are taken field by field (none spans two fields),
and a shingle found in at least `template_share` of the distinct records (and `template_min_records` of them) is
left out of the comparison: `common_shingles` counts them per chunk, `prepare.py` adds the counts up over the
whole input, and the records that hold such shingles get their signature again from the rest
(`signature_of_hashes`). Only what varies between records is compared; a record made of nothing but template
keeps all its shingles.

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


def record_shingles(fields: list[str], size: int) -> set[bytes]:
    """The shingles of each non-empty text field, together: none spans the end of one field and the start of the
    next. A record of one field has exactly `shingles(text)`."""
    found: set[bytes] = set()
    for text in [f for f in fields if f.strip()] or [""]:
        found |= shingles(text, size)
    return found


def shingle_hashes(found: set[bytes]) -> np.ndarray:
    """Sorted 32-bit hashes (xxhash32) of a set of shingles, uint32."""
    return np.unique(np.fromiter((xxhash.xxh32_intdigest(s) for s in found), dtype=np.uint32, count=len(found)))


def signature_of_hashes(hashes: np.ndarray, config: DedupConfig) -> np.ndarray:
    """MinHash signature, (num_perm,) uint32, of shingles given by their 32-bit hashes."""
    a, b = _permutations(config.num_perm, config.seed)
    hashes = np.asarray(hashes, dtype=np.uint64)
    # (shingles, num_perm): the universal hash (a*h + b) mod p, kept to 32 bits, as datasketch's legacy scheme
    # (its uint64 products wrap around; ours wrap identically).
    with np.errstate(over="ignore"):
        permuted = np.bitwise_and((hashes[:, None] * a + b) % _MERSENNE, _MAX_HASH)
    return permuted.min(axis=0).astype(np.uint32)


def signature(text: str, config: DedupConfig) -> np.ndarray:
    """The text's MinHash signature, (num_perm,) uint32: exactly what `datasketch.MinHash(scheme="legacy",
    hashfunc=xxhash.xxh32_intdigest).update_batch(shingles)` computes (a test checks), without building a
    MinHash object per record; xxhash32 replaces datasketch's default sha1, which is several times slower."""
    return signature_of_hashes(shingle_hashes(shingles(text, config.shingle_size)), config)


def record_signatures(prompt: np.ndarray, answer: np.ndarray, config: DedupConfig
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """(signature of the whole record, (prompt signature, answer signature) or None when it has no answer), from
    the shingle hashes of each side. The whole record's is the element-wise minimum of the two: MinHash of a union.
    """
    if not len(answer):
        return signature_of_hashes(prompt, config), None
    sides = np.stack([signature_of_hashes(prompt, config) if len(prompt) else
                      np.full(config.num_perm, np.iinfo(np.uint32).max, np.uint32),
                      signature_of_hashes(answer, config)])
    return sides.min(axis=0), sides


def common_shingles(per_record: list[np.ndarray], min_count: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, counts): the shingle hashes found in at least `min_count` of these records (each record's hashes
    distinct), most common first.

    >>> common_shingles([np.array([1, 2], np.uint32), np.array([2, 3], np.uint32), np.array([2], np.uint32)], 2)
    (array([2], dtype=uint32), array([3]))
    """
    if not per_record:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    values, counts = np.unique(np.concatenate(per_record), return_counts=True)
    keep = counts >= min_count
    order = np.argsort(-counts[keep], kind="stable")
    return values[keep][order], counts[keep][order].astype(np.int64)


def shingle_names(found: list[set[bytes]], wanted: np.ndarray) -> dict[int, str]:
    """{hash: shingle} for the `wanted` hashes, looked up in these records' shingle sets (for the report)."""
    wanted_set, names = set(wanted.tolist()), {}
    for shingle_set in found:
        for shingle in shingle_set:
            h = xxhash.xxh32_intdigest(shingle)
            if h in wanted_set and h not in names:
                names[h] = shingle.decode(errors="replace")
        if len(names) == len(wanted_set):
            break
    return names


def without_template(hashes: np.ndarray, template: np.ndarray) -> np.ndarray | None:
    """`hashes` less the template's (a sorted array), or None when the record holds none of them (its signature
    stands) or nothing else (a record that is all template is compared whole).

    >>> without_template(np.array([1, 5, 9], np.uint32), np.array([5], np.uint32))
    array([1, 9], dtype=uint32)
    """
    shared = np.isin(hashes, template, assume_unique=True)
    if not shared.any() or shared.all():
        return None
    return hashes[~shared]


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


def size_bound(a: int, b: int) -> float:
    """The highest Jaccard similarity two sets of these sizes can have: |A & B| / |A | B| <= min / max.

    Exact, where a signature's estimate is not: on a short request of 5 shingles against 6 ("rate the current
    novel 5 of 6" / "... 6 points", at most 0.83), 128 permutations estimate >= 0.9 often enough that a few such
    pairs of SNIPS's 13,784 requests passed `prompt_threshold` (benchmarks/curation_real_data.py).

    >>> size_bound(5, 6)
    0.8333333333333334
    >>> size_bound(0, 0)
    1.0
    """
    return min(a, b) / max(a, b) if max(a, b) else 1.0


def near_duplicate_clusters(keys: np.ndarray, signatures, threshold: float, all_pairs_up_to: int = 64,
                            sides=None, prompt_threshold: float = 1.0) -> dict[int, tuple[int, float]]:
    """Records to drop as near-duplicates: {index: (index of the earlier kept record it duplicates, similarity)}.

    `keys` is (records, bands) from `band_keys`; `signatures` is indexable by record (an array or a memmap).
    Candidates sharing a bucket are verified pairwise when the bucket is small, else against its first record.
    Records are then taken in order, and one is dropped when it is a near-duplicate of an earlier record that is
    kept: every dropped record is itself similar to the record named as its original. (Joining verified pairs
    into clusters instead would chain: on short templated requests "rate this textbook a 4" ~ "... a 4." ~ ...
    reaches "rate this textbook a zero".)

    `sides`, when given, holds per record (prompt signature, answer signature, prompt shingles, answer shingles),
    or None for a record with no answer: two records that both have answers are near-duplicates when their
    prompts reach `prompt_threshold` and their answers `threshold` (their signatures together need not), so that
    two requests that differ in one word ("rate this album a 1" / "a 5") are both kept while the same request
    answered twice is not. The shingle counts (those compared, template left out) bound each side's similarity
    exactly (`size_bound`), which the estimate alone does not on short requests.
    """
    edges: dict[tuple[int, int], float] = {}
    for band in range(keys.shape[1]):
        column = keys[:, band]
        order = np.argsort(column, kind="stable")
        sorted_keys = column[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
            members = np.sort(order[start:end])
            firsts = members if end - start <= all_pairs_up_to else members[:1]
            for i, first in enumerate(firsts):
                for other in members[i + 1:]:
                    pair = (int(first), int(other))
                    if pair in edges:
                        continue
                    both = sides is not None and sides[pair[0]] is not None and sides[pair[1]] is not None
                    s = jaccard(signatures[pair[0]], signatures[pair[1]])
                    if both:
                        (p0, a0, np0, na0), (p1, a1, np1, na1) = sides[pair[0]], sides[pair[1]]
                        if (size_bound(np0, np1) < prompt_threshold or size_bound(na0, na1) < threshold
                                or jaccard(p0, p1) < prompt_threshold or jaccard(a0, a1) < threshold):
                            s = 0.0
                        else:
                            s = max(s, threshold)
                    edges[pair] = s
    earlier: dict[int, list[tuple[int, float]]] = {}
    for (a, b), s in edges.items():
        if s >= threshold:
            earlier.setdefault(b, []).append((a, s))
    dropped: dict[int, tuple[int, float]] = {}
    for b in sorted(earlier):
        kept = [(s, a) for a, s in earlier[b] if a not in dropped]
        if kept:
            s, a = max(kept)
            dropped[b] = (a, s)
    return dropped
