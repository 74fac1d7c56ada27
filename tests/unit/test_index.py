"""The in-memory suppression index: bulk load, lookups and incremental pruning."""

from sidecar.suppression.index import SuppressionIndex

NOW = 1_795_000_000.0


def test_put_many_matches_put_and_shares_entries():
    rows = [
        (
            f"User{i}@Example.test",
            "" if i % 3 else "shop",
            "hard bounce" if i % 2 else "complaint",
            NOW - (i % 5) * 40000,
            None if i % 4 else NOW + i,
        )
        for i in range(200)
    ]
    one, bulk = SuppressionIndex(), SuppressionIndex()
    for r in rows:
        one.put(*r)
    assert bulk.put_many(iter(rows)) == 200
    assert len(one) == len(bulk) == 200
    for address, tenant, *_ in rows:
        assert one.lookup(address, tenant, NOW) == bulk.lookup(address, tenant, NOW)
    entries = {id(e) for d in bulk._by_tenant.values() for e in d.values()}
    assert len(entries) < 60


def test_prune_expired_touches_only_what_expired():
    index = SuppressionIndex()
    index.put_many(
        [("a@x.test", "", "r", NOW, NOW + 10), ("b@x.test", "", "r", NOW, None), ("c@x.test", "t", "r", NOW, NOW + 20)]
    )
    index.put("d@x.test", "", "r", NOW, NOW + 5)
    index.put("a@x.test", "", "r", NOW, NOW + 100)  # extended: the old expiry no longer applies
    index.put("d@x.test", "", "r", NOW, None)  # now permanent
    index.discard("c@x.test", "t")
    assert index.prune_expired(NOW + 50) == 0
    assert len(index) == 3
    assert index.prune_expired(NOW + 100) == 1
    assert index.lookup("a@x.test", "", NOW) is None
    assert index.lookup("b@x.test", "", NOW) and index.lookup("d@x.test", "", NOW + 1e6)
    assert index._expiring == []


def test_prune_expired_rebuilds_a_heap_of_stale_records():
    index = SuppressionIndex()
    for i in range(30000):
        index.put("a@x.test", "", "r", NOW, NOW + 1000 + i)  # 30,000 records, one live entry
    assert index.prune_expired(NOW) == 0
    assert len(index._expiring) == 1
    assert index.prune_expired(NOW + 1e6) == 1 and len(index) == 0
