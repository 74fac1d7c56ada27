from sidecar.suppression.changefeed import ChangeCursor


def ids(rows):
    return [r[0] for r in rows]


def test_contiguous_ids_advance():
    c = ChangeCursor(0)
    assert ids(c.accept([(1,), (2,), (3,)], 0)) == [1, 2, 3]
    assert c.low == 3 and not c.applied and not c.gaps


def test_late_commit_of_smaller_id_is_not_lost():
    c = ChangeCursor(0)
    assert ids(c.accept([(1,), (3,)], 0)) == [1, 3]
    assert c.low == 1 and c.gaps == {2: 0}
    assert ids(c.accept([(3,), (4,)], 1)) == [4]  # 3 already applied, 2 still missing
    assert ids(c.accept([(2,), (3,), (4,)], 2)) == [2]  # 2 committed late: applied once
    assert c.low == 4 and not c.gaps


def test_permanent_gap_is_given_up_after_timeout():
    c = ChangeCursor(10, gap_timeout=5)
    c.accept([(12,)], 100)
    assert c.low == 10
    c.accept([(12,)], 104)
    assert c.low == 10
    c.accept([(12,)], 105)
    assert c.low == 12
