"""Balance and split: the last two stages, which see only (index, id, category) of the surviving records.

Balance caps each category (`max_per_category`), keeping a seeded pseudo-random subset, and can upsample small
categories towards `min_per_category` — but never repeating a record more than `max_repeat` times. The default,
`max_repeat: 1`, never repeats anything: the Dolly authors' "no oversampling" (repeated examples are memorised,
not learned; Hernandez et al. 2022, "Scaling Laws and Interpretability of Learning from Repeated Data").

Split is stratified: within each category, records ordered by a seeded hash of their id, and the first
`round(n * validation_fraction)` go to validation. The same seed and ids give the same split on any machine
and with any number of workers, and adding records does not move the others.

>>> rank("a", 42) == rank("a", 42), rank("a", 42) == rank("a", 43)
(True, False)
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import xxhash

from seedbed.curate.config import BalanceConfig, SplitConfig


def rank(record_id: str, seed: int) -> int:
    """A stable pseudo-random rank for a record id."""
    return xxhash.xxh64_intdigest(record_id.encode(), seed=seed)


def balance(ids: list[str], categories: list[str], config: BalanceConfig) -> tuple[set[int], dict[int, int]]:
    """(indices dropped by a cap, {index: extra copies} for upsampling)."""
    by_category: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(categories):
        by_category[category].append(i)
    dropped: set[int] = set()
    copies: dict[int, int] = {}
    for category, members in by_category.items():
        cap = config.caps.get(category, config.max_per_category)
        members.sort(key=lambda i: rank(ids[i], config.seed))
        if cap is not None and len(members) > cap:
            dropped.update(members[cap:])
            members = members[:cap]
        if config.min_per_category and config.max_repeat > 1 and len(members) < config.min_per_category:
            wanted = min(config.min_per_category, len(members) * config.max_repeat) - len(members)
            for k in range(wanted):  # round-robin, so copies spread evenly over the category's records
                copies[members[k % len(members)]] = copies.get(members[k % len(members)], 0) + 1
    return dropped, copies


def split(ids: list[str], categories: list[str], config: SplitConfig) -> set[int]:
    """Indices that go to validation."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, category in enumerate(categories):
        groups[category if config.stratify else ""].append(i)
    validation: set[int] = set()
    for members in groups.values():
        members.sort(key=lambda i: rank(ids[i], config.seed))
        validation.update(members[: math.floor(len(members) * config.validation_fraction + 0.5)])
    return validation


def histogram(categories) -> dict[str, int]:
    return dict(Counter(categories).most_common())
