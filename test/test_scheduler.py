# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The worker's scheduler (no ROS): latest frame per camera, fair batches, holding, jobs."""

import collections
import threading
import time

from dpt_ros.scheduler import Job, Scheduler


def take(s, max_size=4, max_wait=0.0):
    return s.next(lambda: max_size, lambda: max_wait)


def test_latest_frame_per_camera_wins_and_drops_are_reported():
    s = Scheduler(['a', 'b'])
    assert s.put('a', 1) is False
    assert s.put('a', 2) is True  # replaced: a drop
    s.put('b', 10)
    batch = take(s)
    assert sorted((t.camera, t.msg) for t in batch) == [('a', 2), ('b', 10)]
    assert s.clear() == 0


def test_least_recently_served_camera_goes_first():
    """A camera refilling its slot faster than the worker runs cannot lock another out."""
    s = Scheduler(['fast', 'slow', 'third'])
    served = collections.Counter()
    for step in range(60):
        s.put('fast', step)                # 30 Hz: a new frame before every batch
        if step % 6 == 0:
            s.put('slow', step)            # 5 Hz
        if step % 3 == 0:
            s.put('third', step)           # 10 Hz
        for t in take(s, max_size=1):      # room for one frame per forward
            served[t.camera] += 1
    assert served['slow'] == 10 and served['third'] == 20  # every frame they sent
    assert served['fast'] == 30


def test_ready_frame_waits_for_company_up_to_max_wait():
    s = Scheduler(['a', 'b'])
    s.put('a', 1)

    def later():
        time.sleep(0.05)
        s.put('b', 2)
    threading.Thread(target=later).start()
    t0 = time.monotonic()
    batch = take(s, max_size=2, max_wait=2.0)
    assert {t.camera for t in batch} == {'a', 'b'}  # held until b came
    assert time.monotonic() - t0 < 1.0
    s.put('a', 3)
    t0 = time.monotonic()
    assert [t.camera for t in take(s, max_size=2, max_wait=0.1)] == ['a']  # b never came
    assert 0.08 <= time.monotonic() - t0 < 1.0
    s.put('a', 4)
    t0 = time.monotonic()
    assert [t.camera for t in take(s, max_size=2, max_wait=0.0)] == ['a']  # 0: never held
    assert time.monotonic() - t0 < 0.05


def test_jobs_first_and_stop():
    s = Scheduler(['a'])
    s.put('a', 1)
    job = s.submit(lambda: 42)
    item = take(s)
    assert isinstance(item, Job)
    item()
    assert job.done.is_set() and job.result() == 42
    failing = s.submit(lambda: 1 / 0)
    take(s)()
    try:
        failing.result()
        raise AssertionError('the job error was not raised')
    except ZeroDivisionError:
        pass
    assert [t.msg for t in take(s)] == [1]
    s.stop()
    assert take(s) is None


def test_a_job_ends_the_wait_for_company():
    s = Scheduler(['a', 'b'])
    s.put('a', 1)
    threading.Timer(0.05, lambda: s.submit(lambda: None)).start()
    t0 = time.monotonic()
    assert isinstance(take(s, max_size=2, max_wait=5.0), Job)
    assert time.monotonic() - t0 < 2.0
    assert [t.camera for t in take(s, max_size=2, max_wait=0.0)] == ['a']  # still waiting
