# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""What the node's one worker thread runs next, and the hand-off of its results to publishing.

Each camera has one latest-frame slot: a new frame replaces the one waiting (counted as a
drop), so nothing queues. A frame is ready unless its gate holds it (depth.mode fitted: its
anchor message has not arrived yet), and then only for the time the gate gives, counted from
when its slot began waiting or the worker became free, so a camera whose frames keep
replacing each other still gets served; a held frame never holds up another camera's
(and a new frame of it replaces it as any other). A batch takes at most one ready frame
per camera, least recently served camera first, so a fast camera cannot lock out a slow one.
A ready frame may be held up to max_wait for frames of other cameras to join its batch. Jobs
(load, move to the device, free, teardown) run on the same thread because all torch work
happens there. Handoff publishes a batch on a thread of its own while the worker runs the
next one, one batch at a time. No rclpy, no torch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

# (camera, message) -> None when the frame is ready, else the seconds it may wait at most.
Gate = Callable[[str, Any], Optional[float]]


@dataclass
class Taken:
    """One frame taken for a batch: its camera, the message and when it arrived (monotonic)."""

    camera: str
    msg: Any
    arrived: float


class Job:
    """A function to run on the worker thread; the caller waits on done."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None

    def __call__(self) -> None:
        """Run it, keeping the result or the exception for the caller."""
        try:
            self.value = self.fn()
        except BaseException as exc:  # noqa: B902 - handed to the caller, which raises it
            self.error = exc
        finally:
            self.done.set()

    def result(self) -> Any:
        """Return the value, or raise what the function raised (after done is set)."""
        if self.error is not None:
            raise self.error
        return self.value


class Scheduler:
    """Latest-frame slots per camera, a job queue and the worker's wait for the next thing."""

    def __init__(self, cameras: Sequence[str], gate: Optional[Gate] = None) -> None:
        self._cond = threading.Condition()
        self._slots: Dict[str, Optional[Tuple[Any, float]]] = dict.fromkeys(cameras)
        self._since: Dict[str, float] = dict.fromkeys(cameras, 0.0)  # slot waiting since
        self._idle_since = 0.0  # when the worker last asked for work
        self._gate = gate
        self._served: Dict[str, int] = dict.fromkeys(cameras, 0)  # batch it was last in
        self._batches = 0
        self._jobs: Deque[Job] = deque()
        self._stopped = False

    @property
    def cameras(self) -> List[str]:
        """Camera names, in the order given."""
        return list(self._slots)

    def put(self, camera: str, msg: Any) -> bool:
        """Store the newest frame of a camera; return True if it replaced one (a drop)."""
        now = time.monotonic()
        with self._cond:
            dropped = self._slots[camera] is not None
            self._slots[camera] = (msg, now)
            if not dropped:
                self._since[camera] = now
            self._cond.notify()
        return dropped

    def poke(self) -> None:
        """Look at the waiting frames again: what a gate waits for may have come."""
        with self._cond:
            self._cond.notify_all()

    def clear(self) -> int:
        """Forget waiting frames (deactivation); return how many there were."""
        with self._cond:
            n = sum(s is not None for s in self._slots.values())
            self._slots = dict.fromkeys(self._slots)
        return n

    def submit(self, fn: Callable[[], Any]) -> Job:
        """Queue a job for the worker; it runs before any further frame."""
        job = Job(fn)
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()
        return job

    def withdraw(self, job: Job) -> bool:
        """Take a job back out of the queue; False if the worker took it already."""
        with self._cond:
            if job in self._jobs:
                self._jobs.remove(job)
                return True
        return False

    def stop(self) -> None:
        """Make next() return None from now on (queued jobs still run first)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        """Whether stop() was called."""
        return self._stopped

    def next(self, max_size: Callable[[], int],
             max_wait_s: Callable[[], float]) -> Optional[Any]:
        """Block until there is work: a Job, a list of Taken (a batch), or None once stopped.

        max_size and max_wait_s are read when a batch is formed (live settings).
        """
        with self._cond:
            self._idle_since = time.monotonic()
            while True:
                if self._jobs:
                    return self._jobs.popleft()
                if self._stopped:
                    return None
                ready, held = self._ready()
                if ready:
                    return self._take(max(1, max_size()), max_wait_s())
                self._cond.wait(min(0.5, max(held - time.monotonic(), 0.0)))

    def _ready(self) -> Tuple[List[str], float]:
        """Cameras with a ready frame, and when the first held frame's wait ends (lock held).

        A held frame's wait counts from when its slot began waiting or the worker became free,
        whichever is later: the worker never idles longer than the gate's time for a camera
        whose frames keep replacing each other, and the newest frame still gets that time
        after a long forward.
        """
        ready, now, held = [], time.monotonic(), float('inf')
        for c, slot in self._slots.items():
            if slot is None:
                continue
            wait = self._gate(c, slot[0]) if self._gate is not None else None
            end = max(self._since[c], self._idle_since) + (wait or 0.0)
            if wait is None or now >= end:
                ready.append(c)
            else:
                held = min(held, end)
        return ready, held

    def _take(self, max_size: int, max_wait_s: float) -> Any:
        """Form a batch (lock held); a job or stop arriving meanwhile ends the wait early."""
        ready, held = self._ready()
        full = min(max_size, len(self._slots))
        if max_wait_s > 0 and len(ready) < full:
            deadline = min(self._slots[c][1] for c in ready) + max_wait_s
            while len(ready) < full and not self._jobs and not self._stopped:
                now = time.monotonic()
                if deadline <= now:
                    break
                self._cond.wait(max(min(deadline, held) - now, 0.0))
                ready, held = self._ready()
        if self._jobs:
            return self._jobs.popleft()
        if self._stopped:
            return None
        self._batches += 1
        chosen = sorted(ready, key=lambda c: self._served[c])[:max_size]
        out = []
        for c in chosen:
            msg, arrived = self._slots[c]
            self._slots[c] = None
            self._served[c] = self._batches
            out.append(Taken(c, msg, arrived))
        return out


class Handoff:
    """Publishing of one batch at a time, on its own thread while the worker computes the next.

    submit(fn, overlap=True) hands fn to the publishing thread and returns at once, unless the
    previous batch is still being published: then the worker waits for it, so at most one
    batch is published while one is computed and nothing queues. overlap=False runs fn on the
    caller's thread under the same rules. Nothing runs unless open: close() drops a batch not
    yet started and waits for the one being published, so the publishers can go after it.
    """

    def __init__(self, on_error: Callable[[BaseException], None],
                 name: str = 'dpt_publisher') -> None:
        self._cond = threading.Condition()
        self._pending: Optional[Callable[[], None]] = None
        self._busy = False
        self._runner: Optional[threading.Thread] = None  # the thread publishing a batch now
        self._open = False
        self._stopped = False
        self._on_error = on_error
        self.dropped = 0  # batches dropped by close() or handed over while closed
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def open(self) -> None:
        """Accept batches (the publishers exist)."""
        with self._cond:
            self._open = not self._stopped

    def submit(self, fn: Callable[[], None], overlap: bool = True) -> bool:
        """Publish fn's batch (here or on the publishing thread); False if it was dropped."""
        with self._cond:
            while (self._busy or self._pending is not None) and self._open:
                self._cond.wait()
            if not self._open:
                self.dropped += 1
                return False
            if overlap:
                self._pending = fn
                self._cond.notify_all()
                return True
            self._busy = True
        self._call(fn)
        return True

    def _call(self, fn: Callable[[], None]) -> None:
        self._runner = threading.current_thread()
        try:
            fn()
        except Exception as exc:  # noqa: B902 - the publishing thread must outlive any batch
            self._on_error(exc)
        finally:
            with self._cond:
                self._busy = False
                self._runner = None
                self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                fn, self._pending = self._pending, None
                self._busy = True
            self._call(fn)

    @property
    def idle(self) -> bool:
        """Whether no batch is being published or waiting to be."""
        with self._cond:
            return not self._busy and self._pending is None

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting, drop a batch not yet started, wait for the one being published."""
        with self._cond:
            self._open = False
            if self._pending is not None:
                self._pending = None
                self.dropped += 1
            self._cond.notify_all()
            if threading.current_thread() is not self._runner:  # not from inside a batch
                self._cond.wait_for(lambda: not self._busy, timeout)

    def stop(self) -> None:
        """close(), then end the publishing thread (for good)."""
        self.close()
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=10.0)
