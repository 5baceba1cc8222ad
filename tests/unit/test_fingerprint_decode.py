"""``fingerprint``'s decoding, without a database: ``peel`` on IBLTs built in Python the
way the scan's SQL builds them, and ``_diff`` on a fingerprint and a scan made of known
rows (exact figures when the difference decodes, the buckets' lower bounds otherwise)."""

from __future__ import annotations

import logging
import random

from migration_soak.fingerprint import Fingerprint, _cells_of, _check_hash, _diff, _Scan, peel

FIELDS = ("n", "key", "row", "mask", "check")
COLUMNS = ("email", "clientId")  # mask bit 0: email, bit 1: clientId
CELLS, BUCKETS = 16, 8


def h64(rng: random.Random) -> int:
    return rng.getrandbits(64) - (1 << 63)  # a signed bigint, like hashtextextended


def iblt(elements, cells=CELLS) -> dict[str, list[int]]:
    """The IBLT of ``[(kh, vh, mask)]``: what the scan's GROUPING SETS return per cell."""
    table = {f: [0] * (3 * cells) for f in FIELDS}
    for kh, vh, mask in elements:
        for j in _cells_of(vh, cells):
            table["n"][j] += 1
            table["key"][j] ^= kh
            table["row"][j] ^= vh
            table["mask"][j] ^= mask
            table["check"][j] ^= _check_hash(vh)
    return table


def buckets(elements, n_buckets=BUCKETS):
    """Per key-hash bucket: rows, XOR of row hashes, non-null values per column."""
    n, digest = [0] * n_buckets, [0] * n_buckets
    non_null = {c: [0] * n_buckets for c in COLUMNS}
    for kh, vh, mask in elements:
        b = kh & (n_buckets - 1)
        n[b] += 1
        digest[b] ^= vh
        for i, c in enumerate(COLUMNS):
            non_null[c][b] += (mask >> i) & 1
    return n, digest, non_null


def fingerprint(elements) -> Fingerprint:
    n, digest, non_null = buckets(elements)
    return Fingerprint(table="users", key="id", columns=COLUMNS, created_column="createdAt", created_max="x",
                       taken_at="2026-01-01T00:00:00+00:00", rows=len(elements),
                       non_null={c: sum(v) for c, v in non_null.items()}, cells=CELLS, iblt=iblt(elements),
                       buckets={"n": n, "digest": digest, "non_null": non_null})


def scan(elements, rows_old=None) -> _Scan:
    n, digest, non_null = buckets(elements)
    old = len(elements) if rows_old is None else rows_old
    return _Scan(rows_total=old, rows_old=old, created_max="x", now="2026-01-02T00:00:00+00:00",
                 iblt=iblt(elements), bucket_n=n, digest=digest, non_null=non_null)


def rows(count, seed=1):
    rng = random.Random(seed)
    return [(h64(rng), h64(rng), 0b11) for _ in range(count)]


# --- peel -------------------------------------------------------------------------------


def test_equal_tables_peel_to_nothing():
    table = iblt(rows(200))
    assert peel(table, table, CELLS) == []


def test_peel_returns_each_differing_element_with_its_side():
    before = rows(40)
    rng = random.Random(2)
    added = (h64(rng), h64(rng), 0b01)
    now = before[3:] + [added]
    found = peel(iblt(before), iblt(now), CELLS)
    assert sorted(found) == sorted([(1, kh, vh, m) for kh, vh, m in before[:3]] + [(-1, *added)])


def test_too_many_differences_do_not_decode():
    assert peel(iblt(rows(200)), iblt([]), CELLS) is None  # 200 elements in 48 cells


def test_a_cell_whose_check_does_not_match_is_not_peeled():
    before = rows(3)
    broken = iblt(before)
    broken["check"] = [c ^ 1 if c else 0 for c in broken["check"]]  # no cell passes for one element
    assert peel(broken, iblt([]), CELLS) is None


# --- _diff ------------------------------------------------------------------------------


def test_exact_figures_when_the_difference_decodes():
    before = rows(60)
    (k0, _, _), (k1, v1, _), (k2, v2, _), (k3, v3, _) = before[:4]
    rng = random.Random(3)
    appeared = (h64(rng), h64(rng), 0b11)
    now = ([(k1, v1 ^ 1, 0b01), (k2, v2 ^ 1, 0b11), (k3, v3 ^ 1, 0b00)]  # clientId nulled; a change; both nulled
           + before[4:] + [appeared])  # row 0 deleted
    result = _diff(fingerprint(before), scan(now))
    assert result["exact"] is True
    assert (result["rows_lost"], result["rows_changed"], result["rows_appeared"]) == (1, 3, 1)
    assert result["values_lost"] == {"email": 1, "clientId": 2}
    assert result["lost_kh"] == [k0]
    assert set(result["changed_kh"][:2]) == {k1, k3} and result["changed_kh"][2] == k2  # lost values first
    assert 1 <= result["buckets_differing"] <= 5


def test_lower_bounds_from_the_buckets_when_the_difference_does_not_decode():
    before = rows(400)
    now = before[150:]
    n_before, _, _ = buckets(before)
    n_now, _, _ = buckets(now)
    result = _diff(fingerprint(before), scan(now))
    assert result == {"exact": False, "rows_lost": 150, "values_lost": {"email": 0, "clientId": 0},
                      "rows_changed": 0, "rows_appeared": 0,
                      "buckets_differing": sum(1 for a, b in zip(n_before, n_now) if a != b),
                      "lost_kh": [], "changed_kh": []}


def test_bucket_bounds_count_values_lost_beyond_the_rows_lost_and_changed_buckets():
    before = rows(400)
    # every surviving row loses its clientId; each bucket's first row is deleted
    first = {}
    for r in before:
        first.setdefault(r[0] & (BUCKETS - 1), r)
    now = [(kh, vh ^ 1, 0b01) for kh, vh, _ in before if (kh, vh, _) not in first.values()]
    result = _diff(fingerprint(before), scan(now))
    assert not result["exact"]
    assert result["rows_lost"] == len(first)
    assert result["values_lost"] == {"email": 0, "clientId": 400 - len(first)}
    assert result["rows_changed"] == 0  # every bucket lost a row: no bucket counts as changed only
    rng = random.Random(4)
    changed_only = [(kh, h64(rng), m) for kh, _, m in before]  # same rows, new values, nothing nulled
    bounds = _diff(fingerprint(before), scan(changed_only))
    assert (bounds["exact"], bounds["rows_lost"], bounds["rows_changed"]) == (False, 0, BUCKETS)


def test_a_decoded_difference_that_disagrees_with_the_row_counts_gives_the_bounds(caplog):
    before = rows(60)
    now = before[1:]
    with caplog.at_level(logging.WARNING, logger="migration_soak.fingerprint"):
        result = _diff(fingerprint(before), scan(now, rows_old=58))  # one row more gone than decoded
    assert not result["exact"] and result["rows_lost"] == 1 and result["lost_kh"] == []
    assert "decoded differences disagree with the buckets" in caplog.text
