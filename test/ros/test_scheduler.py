# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The worker's scheduler and publishing hand-off (no ROS): slots, fair batches, jobs, overlap."""

import collections
import threading
import time

from dpt_ros.ros.scheduler import Handoff, Job, Scheduler


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


class Gate:
    """A batch that publishes only when let go, recording which thread ran it."""

    def __init__(self, log, name):
        self.log, self.name = log, name
        self.started, self.go = threading.Event(), threading.Event()

    def __call__(self):
        self.log.append((self.name, threading.current_thread().name))
        self.started.set()
        assert self.go.wait(5), 'never let go'


def test_handoff_overlaps_one_batch_and_the_worker_waits_for_it():
    errors = []
    h = Handoff(on_error=errors.append)
    log = []
    first, second = Gate(log, 'first'), Gate(log, 'second')
    assert not h.submit(first), 'closed until opened: dropped'
    assert h.dropped == 1
    h.open()
    t0 = time.monotonic()
    assert h.submit(first)  # returns at once: published on the other thread
    assert time.monotonic() - t0 < 0.5
    assert first.started.wait(5)
    handed = threading.Event()

    def worker():
        h.submit(second)  # the previous batch is still being published: wait
        handed.set()
    threading.Thread(target=worker).start()
    assert not handed.wait(0.2), 'a second batch was accepted while the first was published'
    first.go.set()
    assert handed.wait(5) and second.started.wait(5)
    second.go.set()
    assert_eventually(lambda: h.idle)
    assert [n for n, _ in log] == ['first', 'second']
    assert {t for _, t in log} == {'dpt_publisher'}
    h.stop()
    assert not errors


def test_handoff_inline_runs_on_the_caller():
    h = Handoff(on_error=lambda exc: None)
    h.open()
    log = []
    gate = Gate(log, 'inline')
    gate.go.set()
    assert h.submit(gate, overlap=False)
    assert log == [('inline', threading.current_thread().name)]
    h.stop()


def test_handoff_close_drops_the_waiting_batch_and_waits_for_the_running_one():
    h = Handoff(on_error=lambda exc: None)
    h.open()
    log = []
    running, waiting = Gate(log, 'running'), Gate(log, 'waiting')
    h.submit(running)
    assert running.started.wait(5)
    results = []
    threading.Thread(target=lambda: results.append(h.submit(waiting))).start()
    time.sleep(0.1)  # the worker now waits to hand 'waiting' over
    threading.Timer(0.2, running.go.set).start()
    t0 = time.monotonic()
    h.close()
    assert time.monotonic() - t0 >= 0.15, 'close() returned while a batch was being published'
    assert h.idle
    assert_eventually(lambda: results == [False])  # dropped, never run
    assert [n for n, _ in log] == ['running'] and h.dropped == 1
    assert not h.submit(lambda: log.append('late'))
    h.open()  # activated again
    done = threading.Event()
    assert h.submit(done.set) and done.wait(5)
    h.stop()
    assert not h.submit(lambda: None)
    h.open()
    assert not h.submit(lambda: None), 'stopped for good'


def test_handoff_survives_a_failing_batch():
    errors = []
    h = Handoff(on_error=errors.append)
    h.open()
    h.submit(lambda: 1 / 0)
    done = threading.Event()
    assert h.submit(done.set) and done.wait(5)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
    h.submit(lambda: 1 / 0, overlap=False)
    assert len(errors) == 2
    h.stop()


def assert_eventually(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, 'condition never held'
        time.sleep(0.01)


def test_frame_waits_for_its_gate_without_holding_up_other_cameras():
    """depth.mode fitted: a frame waits for its anchor message; other cameras go meanwhile."""
    arrived = set()
    s = Scheduler(['a', 'b'], gate=lambda cam, msg: None if msg in arrived else 5.0)
    s.put('a', 1)
    s.put('b', 2)
    arrived.add(2)
    assert [(t.camera, t.msg) for t in take(s)] == [('b', 2)]  # a's anchor is not in yet
    got = []
    worker = threading.Thread(target=lambda: got.append(take(s)))
    worker.start()
    worker.join(0.2)
    assert worker.is_alive() and not got  # still waiting (up to 5 s)
    arrived.add(1)
    s.poke()  # what the anchor callback does
    worker.join(2.0)
    assert [(t.camera, t.msg) for t in got[0]] == [('a', 1)]


def test_gate_wait_is_bounded_even_while_frames_keep_replacing():
    """Anchors that never come (or always trail) cost at most the gate's time, then go."""
    s = Scheduler(['a'], gate=lambda cam, msg: 0.1)
    stop = threading.Event()

    def camera():  # a new frame every 20 ms, each one restarting nothing
        i = 0
        while not stop.is_set():
            s.put('a', i)
            i += 1
            time.sleep(0.02)
    threading.Thread(target=camera, daemon=True).start()
    try:
        for _ in range(3):
            t0 = time.monotonic()
            batch = take(s)
            assert [t.camera for t in batch] == ['a']
            assert time.monotonic() - t0 < 1.0
    finally:
        stop.set()
    # A frame waiting when the worker comes back from a long forward gets its time anew.
    s2 = Scheduler(['a'], gate=lambda cam, msg: 0.3)
    s2.put('a', 0)
    time.sleep(0.4)  # the worker was busy: the frame's own wait has passed meanwhile
    t0 = time.monotonic()
    take(s2)
    assert time.monotonic() - t0 >= 0.25
