"""`plan_runs`: how a gathered batch of padded requests is split into runs. A pure function of
the requests' sizes and rows, tested without a server: each request runs exactly once, and the
split is the cheapest under its cost model (checked against brute force on small batches)."""
from __future__ import annotations

import math

from hypothesis import given, settings, strategies as st

from ember.serve.batching import plan_runs


def _cost(runs, sizes, rows):
    fixed = sum(r * math.prod(s) for r, s in zip(rows, sizes)) / sum(rows)
    total = 0.0
    for run in runs:
        top = [max(sizes[i][d] for i in run) for d in range(len(sizes[0]))]
        total += sum(rows[i] for i in run) * math.prod(top) + fixed
    return total


def _partitions(items):
    if not items:
        yield []
        return
    first, rest = items[0], items[1:]
    for p in _partitions(rest):
        yield [[first], *p]
        for k in range(len(p)):
            yield [*p[:k], [first, *p[k]], *p[k + 1:]]


def test_sentences_of_two_lengths_run_apart_and_equal_lengths_together():
    # 20 short and 10 long sentences: two runs, no padding
    sizes = [(8,), (9,), (16,), (15,), (8,), (9,)] * 5
    runs = plan_runs(sizes, [1] * 30)
    assert sorted(len(r) for r in runs) == [10, 20]
    assert {sizes[i][0] for i in runs[0]} == {8, 9} and {sizes[i][0] for i in runs[1]} == {15, 16}
    assert plan_runs([(12,)] * 7, [1] * 7) == [list(range(7))]


def test_a_run_costs_more_than_a_little_padding():
    assert plan_runs([(8,), (16,)], [1, 1]) == [[0, 1]]       # 8 padded tokens < one run's fixed cost
    assert plan_runs([(2,), (200,)], [1, 1]) == [[0], [1]]
    assert plan_runs([(5,)], [3]) == [[0]]


def test_every_padded_dim_counts():
    # a long first dim and a long second dim do not share a run: that would pad both
    assert sorted(plan_runs([(3, 4), (30, 4), (3, 40)], [1, 1, 1])) == [[0], [1], [2]]


def _requests(dims):
    return st.integers(1, 7).flatmap(lambda n: st.tuples(
        st.lists(st.tuples(*[st.integers(1, 40)] * dims), min_size=n, max_size=n),
        st.lists(st.integers(1, 5), min_size=n, max_size=n)))


@settings(max_examples=120, deadline=None)
@given(_requests(1))
def test_one_padded_dim_gets_the_cheapest_split(case):
    sizes, rows = case
    runs = plan_runs(sizes, rows)
    assert sorted(i for r in runs for i in r) == list(range(len(sizes)))
    best = min(_cost(p, sizes, rows) for p in _partitions(list(range(len(sizes)))))
    assert math.isclose(_cost(runs, sizes, rows), best, rel_tol=1e-9)


@settings(max_examples=120, deadline=None)
@given(_requests(2))
def test_several_padded_dims_each_request_runs_once_and_no_worse_than_one_run_or_singles(case):
    sizes, rows = case
    runs = plan_runs(sizes, rows)
    assert sorted(i for r in runs for i in r) == list(range(len(sizes)))
    got = _cost(runs, sizes, rows)
    assert got <= _cost([list(range(len(sizes)))], sizes, rows) + 1e-9
    assert got <= _cost([[i] for i in range(len(sizes))], sizes, rows) + 1e-9
