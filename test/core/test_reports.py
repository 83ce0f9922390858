# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The package's one percentile and one throttled warning (dpt_ros.core.reports)."""

import math

import numpy as np
import pytest

from dpt_ros.core import reports
from dpt_ros.core.reports import kind_of, percentile, Throttle


@pytest.mark.parametrize('n', [1, 2, 3, 10, 199, 200])
def test_percentile_is_numpys_linear_percentile(n):
    values = list(np.random.default_rng(n).exponential(5.0, n))
    for q in (0, 5, 50, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)),
                                                      rel=1e-12), (n, q)
    assert percentile(values, 50) == pytest.approx(float(np.median(values)), rel=1e-12)


def test_percentile_of_nothing_is_nan_and_order_does_not_matter():
    assert math.isnan(percentile([], 50))
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile((4, 1), 50) == 2.5


def test_throttle_tells_once_per_period_and_counts_the_rest(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(reports.time, 'monotonic', lambda: now[0])
    told = []
    warn = Throttle(told.append, period=5.0)
    assert warn('frame', 'bad frame') and not warn.told('publish')
    assert not warn('frame', 'bad frame') and not warn('frame', 'bad frame')
    assert warn('publish', 'publishing failed')  # another kind still gets its line
    now[0] += 5.0
    assert warn('frame', 'bad frame again')
    assert told == ['bad frame', 'publishing failed',
                    'bad frame again (2 more like this suppressed)']
    assert warn.counts == {'frame': 4, 'publish': 1} and warn.told('frame')


def test_throttle_without_period_tells_the_first_and_counts_into_a_dict():
    skipped = {'cdr': 2}
    notes = []
    once = Throttle(notes.append, None, skipped)
    assert once(('no_info', 'front'), 'no camera_info on front')
    assert not once(('no_info', 'front'), 'no camera_info on front')
    assert once(('no_info', 'rear'), 'no camera_info on rear')
    assert not once('cdr', 'counted, never told: the dict had it already')
    assert notes == ['no camera_info on front', 'no camera_info on rear']
    assert skipped == {'cdr': 3, ('no_info', 'front'): 2, ('no_info', 'rear'): 1}


def test_kind_of_a_message_leaves_its_numbers_out():
    # One kind whatever count, size or stamp the message names: a throttle keyed by it stays
    # one entry over a long run.
    kinds = {kind_of(f'anchor cloud ({n} points) has no finite point.') for n in range(500)}
    assert kinds == {'anchor cloud (# points) has no finite po'}
    assert kind_of('a 640x480 frame at 1712.25 s') == kind_of('a 1280x720 frame at 3.5 s')
    assert kind_of('bad frame') != kind_of('bad camera_info')
    assert len(kind_of('x' * 100)) == 40
