# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Many bags: find them, skip finished outputs, run each one serially or as a Ray task, report.

Each output bag is written into a hidden staging folder beside it (`.NAME.partial/NAME`),
gets a completion marker written last, and is then renamed into place: an output folder is
complete or absent. A re-run skips outputs with the marker and clears staging folders left by a
killed run; --force replaces only dpt_bag's own outputs (targets.py says which folders those
are), never a recording or anything else.

The model is loaded once per worker (BagWorker: one in-process for a serial run, one Ray actor
per worker), and each bag is the pure function bag.process_bag of (bag, options, config), so a
serial run and a Ray run write byte-identical bags.
"""

from __future__ import annotations

from collections import deque
import dataclasses
from dataclasses import asdict, dataclass, field
import hashlib
import json
import logging
import os
from pathlib import Path
import re
import signal
import sys
import time
import traceback
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

import torch

from dpt_ros.core import memory
from dpt_ros.core.config import Config, parse_sizes
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.offline.bag import BagError, BagOptions, is_bag, open_bag, plan_bag, process_bag
from dpt_ros.offline.targets import (check_target, check_writable, clear_staging, MARKER,
                                     output_path, refusal, remove_own, replace, staging)

SUMMARY = 'dpt_bag_summary.json'
RAY_INSTALL = ("--ray needs Ray: pip install 'dpt_ros[ray]' (or pip install -r "
               'requirements/ray.txt); without --ray the bags run one after another')


@dataclass(frozen=True)
class Job:
    """One input bag and the output bag it becomes."""

    name: str
    src: str
    dst: str
    settings: str = ''  # digest of the config, options and checkpoint files (in the marker)
    source: str = ''    # digest of the input bag's files as they were read (in the marker)


@dataclass
class BagResult:
    """One line of the summary: what happened to one bag."""

    bag: str
    input: str
    output: str
    status: str = 'failed'                   # done, skipped or failed
    reason: str = ''
    frames: int = 0
    expected_frames: int = 0
    seconds: float = 0.0                     # inside the worker, reading to closing the bag
    wall_seconds: float = 0.0                # as the driver saw it (queueing, transfer)
    fps: float = 0.0
    no_camera_info: int = 0
    cameras: List[Dict[str, Any]] = field(default_factory=list)  # bag.CameraReport each
    topics: Dict[str, int] = field(default_factory=dict)
    skipped_messages: Dict[str, int] = field(default_factory=dict)
    frame_warnings: Dict[str, int] = field(default_factory=dict)  # bag.BagReport.warnings
    stages_p50_ms: Dict[str, float] = field(default_factory=dict)
    backend_builds: int = 0                  # sessions / engines built during this bag (0:
    #                                          all built when the worker loaded the model)
    notes: List[str] = field(default_factory=list)
    worker: str = ''
    traceback: str = ''


# ---------------------------------------------------------------------------- inputs


def _bag_name(path: Path) -> str:
    return path.stem if path.is_file() else path.resolve().name


def _bags_inside(folder: Path) -> List[Path]:
    return sorted(c for c in folder.iterdir() if not c.name.startswith('.') and is_bag(c))


def split_without_metadata(inputs: Sequence[str]) -> List[str]:
    """Say which input folders look like one recording split into files, its metadata.yaml lost.

    rosbag2 names the files of a split recording NAME_0.mcap, NAME_1.mcap, ... and lists them in
    metadata.yaml; a recorder that was killed can leave the files without it. Read as a folder
    of bags, each file would be a bag of its own (its own output, fits and temporal filter
    starting afresh), so each such folder gets a line that says how to make it one bag again.
    """
    notes = []
    for p in map(Path, inputs):
        if not p.is_dir() or is_bag(p):
            continue
        parts: Dict[Tuple[str, str], List[int]] = {}
        for f in _bags_inside(p):
            m = re.fullmatch(r'(.+)_(\d+)(\.mcap|\.db3)', f.name) if f.is_file() else None
            if m:
                parts.setdefault((m.group(1), m.group(3)), []).append(int(m.group(2)))
        for (stem, ext), numbers in sorted(parts.items()):
            if len(numbers) > 1:
                notes.append(f"'{p}' holds {stem}_{min(numbers)}{ext} .. "
                             f'{stem}_{max(numbers)}{ext} without a metadata.yaml: the parts '
                             'of one recording? Each file is processed as a bag of its own; '
                             f'`ros2 bag reindex {p}` writes the metadata.yaml that makes them '
                             'one bag again')
    return notes


def make_jobs(inputs: Sequence[str], output: str) -> Tuple[List[Job], List[BagResult], bool]:
    """Return (jobs, inputs that are no bags, whether output is a root of several bags).

    One input that is a bag (or not a bag at all) writes the output bag itself; several inputs,
    or a folder of bags, write one bag per input under the output root, named after the input.
    Outputs are absolute (output_path). An output root that is, or lies inside, a folder of
    bags read here raises BagError: a re-run would read its outputs as more bags.
    """
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and (is_bag(paths[0]) or not paths[0].is_dir()
                            or not _bags_inside(paths[0])):
        return [Job(_bag_name(paths[0]) if paths[0].exists() else paths[0].name,
                    str(paths[0]), str(output_path(output)))], [], False
    root = output_path(output)
    jobs: List[Job] = []
    bad: List[BagResult] = []
    for p in paths:
        if is_bag(p):
            found = [p]
        elif p.is_dir() and _bags_inside(p):
            _check_not_inside(root, p)
            found = _bags_inside(p)
        else:
            reason = 'does not exist' if not p.exists() else \
                'is not a bag (a rosbag2 folder with metadata.yaml, or a .mcap / .db3 file) ' \
                'nor a folder of bags'
            bad.append(BagResult(p.name, str(p), '', reason=f"input '{p}' {reason}"))
            continue
        for bag in found:
            name = _bag_name(bag)
            twin = next((j for j in jobs if j.name == name), None)
            if twin is not None and Path(twin.src).resolve() == bag.resolve():
                continue  # given twice (a folder and a bag in it): one output, made once
            if twin is not None:
                bad.append(BagResult(name, str(bag), str(root / name), reason=(
                    f"same output name as '{twin.src}': rename one of them")))
                continue
            jobs.append(Job(name, str(bag), str(root / name)))
    return jobs, bad, True


def in_input_order(results: Sequence[BagResult], inputs: Sequence[str]) -> List[BagResult]:
    """Return results sorted by the input they came from (a bag, or the folder holding it).

    Results of one input keep their order.
    """
    given = [Path(p) for p in inputs]

    def rank(r: BagResult) -> int:
        path = Path(r.input)
        return next((i for i, p in enumerate(given) if p in (path, path.parent)), len(given))
    return sorted(results, key=rank)


def _check_not_inside(root: Path, folder: Path) -> None:
    """Raise BagError when the output root is, or lies inside, a folder of bags being read."""
    real, scanned = root.resolve(), folder.resolve()
    if real == scanned or scanned in real.parents:
        what = 'is' if real == scanned else 'is inside'
        raise BagError(f"output '{root}' {what} the folder of bags '{folder}' that is read: "
                       'nothing was written; choose an output outside the inputs (a re-run '
                       'would read the outputs as bags)')


def check_outputs(jobs: Sequence[Job], written: Sequence[str] = ()) -> None:
    """Raise BagError when an output is an input bag, lies inside one or holds one.

    Paths are compared resolved (symlinks followed): --force replaces an output folder, and
    an input in its place would be deleted. written: other paths the run writes (summary).
    """
    inputs = [(j.src, Path(j.src).resolve()) for j in jobs]
    for out in [j.dst for j in jobs] + list(written):
        real = Path(out).resolve()
        for src, bag in inputs:
            what = 'is' if real == bag else 'is inside' if bag in real.parents else \
                'contains' if real in bag.parents else ''
            if what:
                via = f' (resolved: {real})' if str(real) != str(Path(out).absolute()) else ''
                raise BagError(f"output '{out}'{via} {what} the input bag '{src}': nothing was "
                               'written; choose an output outside the inputs')


def check_targets(jobs: Sequence[Job], summary: Optional[str] = None) -> None:
    """Raise BagError, before the model loads, for an output dpt_bag may not write or replace.

    That is an output that is not dpt_bag's to replace (targets.check_target), or a folder
    (an output's, the summary's) where no file can be made: each gets a probe file, made and
    removed at once.
    """
    for job in jobs:
        check_target(Path(job.dst))
    for folder in sorted({Path(j.dst).parent for j in jobs}):
        check_writable(folder, 'output folder')
    if summary:
        path = Path(summary)
        if path.is_dir():
            raise BagError(f"summary '{summary}' is a folder: give --summary-json a file name")
        _check_summary_outside(jobs, path)
        check_writable(path.parent, 'summary folder')


def _check_summary_outside(jobs: Sequence[Job], summary: Path) -> None:
    """Raise BagError when the summary would be an output bag or a file inside one.

    An output holding anything but its bag is not dpt_bag's to replace (targets.refusal):
    every later run would refuse it, --force too.
    """
    real = summary.resolve()
    for job in jobs:
        out = Path(job.dst).resolve()
        if real == out or out in real.parents:
            what = 'is' if real == out else 'is inside'
            raise BagError(f"summary '{summary}' {what} the output bag '{job.dst}': nothing "
                           'was written; write the summary outside the output bags (e.g. '
                           'in the output root)')


def is_complete(dst: Path) -> bool:
    """Return whether dst is a finished output (its marker is written last)."""
    return (dst / MARKER).is_file()


def _digest(doc: Any) -> str:
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def settings_digest(cfg: Config, opts: BagOptions, weights: str = '') -> str:
    """Return a digest of everything that shapes an output besides the input bag.

    weights: weights_digest(cfg), the checkpoint files (a hub id or a folder keeps its name
    when its weights change).
    """
    return _digest({'config': asdict(cfg), 'options': asdict(opts), 'weights': weights})


def _file_stats(path: Path) -> List[Tuple[str, int, int]]:
    """Return (name, size, modification time ns) of a file or of every file under a folder."""
    if path.is_file():
        st = path.stat()
        return [(path.name, st.st_size, st.st_mtime_ns)]
    return [(str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(path.rglob('*')) if f.is_file()]


def input_digest(src: str) -> str:
    """Return a digest of an input bag's files: names, sizes and modification times.

    Not a content hash: that reads every byte of every bag on every re-run only to decide what
    to skip (a fleet is terabytes), while re-recording or editing a bag changes its files'
    times. A copy that keeps times and sizes but not contents is missed: --force redoes it.
    """
    path = Path(src)
    return _digest(_file_stats(path)) if path.exists() else ''


def weights_digest(cfg: Config) -> str:
    """Return a digest of the checkpoints' files, offline.

    A local folder: its files' names, sizes and modification times. A hub id: the cached
    snapshot transformers loads offline, its commit and the blobs (content-addressed) its
    files point to; 'not cached' if there is none.
    """
    parts: Dict[str, Any] = {}
    for task, source in (('depth', cfg.model.depth), ('segmentation', cfg.model.segmentation)):
        if source:
            folder = Path(source).expanduser()
            parts[task] = _file_stats(folder) if folder.is_dir() else _hub_snapshot(source)
    return _digest(parts)


def _hub_snapshot(repo_id: str) -> List[Any]:
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(repo_id, 'config.json')
    except Exception:  # noqa: B902 - not a hub id, or no huggingface_hub: nothing to find
        found = None
    if not isinstance(found, str):
        return [repo_id, 'not cached']
    snap = Path(found).parent
    return [repo_id, snap.name, [(str(f.relative_to(snap)), Path(os.path.realpath(f)).name)
                                 for f in sorted(snap.rglob('*')) if f.is_file()]]


def _marker(dst: Path) -> Dict[str, Any]:
    try:
        doc = json.loads((dst / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def triage(job: Job, force: bool) -> Optional[BagResult]:
    """Return a result for a job that must not run (complete, or not ours); else None."""
    dst = Path(job.dst)
    if not dst.exists() and not dst.is_symlink():
        return None
    why = refusal(dst)
    if why is not None:  # the command line refuses these up front (check_targets)
        return BagResult(job.name, job.src, job.dst, reason=(
            f"output '{dst}' {why}: dpt_bag never deletes it; move it away or choose another "
            'output'))
    made = _marker(dst)
    other = _other_input(made, job)
    if is_complete(dst) and other is not None and made.get('source') != job.source:
        # Not a new recording of this input: another input of the same name. --force would
        # replace the other one's output with this one's, so it is not offered.
        return BagResult(job.name, job.src, job.dst, reason=(
            f"output '{dst}' was made from '{other}', not from '{job.src}': both inputs are "
            f"named '{job.name}' and their outputs collide; give this one another output root "
            '(or delete that output yourself)'))
    if force:
        return None
    if is_complete(dst) and made.get('settings') != job.settings:
        return BagResult(job.name, job.src, job.dst, reason=(
            f"output '{dst}' is complete but was made with other parameters, options or "
            'checkpoint files; pass --force to redo it'))
    if is_complete(dst) and made.get('source') != job.source:
        return BagResult(job.name, job.src, job.dst, reason=(
            f"output '{dst}' is complete but was made from another recording of '{job.src}' "
            "(its files' sizes or times changed); pass --force to redo it"))
    if is_complete(dst):
        return BagResult(job.name, job.src, job.dst, 'skipped', 'complete (--force redoes it)')
    return BagResult(job.name, job.src, job.dst, reason=(
        f"output '{dst}' exists (an empty folder); pass --force to replace it"))


def _other_input(made: Dict[str, Any], job: Job) -> Optional[str]:
    """Return the input a marker names when it is not job's input (paths resolved), else None.

    Markers before 'input_path' hold the input as it was given: resolved from here.
    """
    given = made.get('input')
    if not isinstance(given, str):
        return None
    real = made.get('input_path') or str(Path(given).resolve())
    return None if real == str(Path(job.src).resolve()) else given


def expected_frames(job: Job, opts: BagOptions, cfg: Config) -> Tuple[int, str]:
    """(frames the bag should give, '') or (0, why it cannot be used), read from its index."""
    try:
        with open_bag(Path(job.src)) as reader:
            return plan_bag(reader, opts, Path(job.src), cfg).expected_frames, ''
    except BagError as exc:
        return 0, str(exc)


# ---------------------------------------------------------------------------- one worker


def _fsync(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _commit(job: Job, opts: BagOptions, folder: Path, result: BagResult) -> None:
    """Make the bag durable, then write the marker (durable too), then move it into place.

    A crash at any point leaves a complete output or none: never a marker beside data that a
    power cut could still lose.
    """
    for f in sorted(folder.rglob('*'), reverse=True):  # files before their folders
        _fsync(f)
    _fsync(folder)
    marker = {'input': job.src, 'input_path': str(Path(job.src).resolve()),
              'frames': result.frames, 'topics': result.topics,
              'no_camera_info': result.no_camera_info, 'settings': job.settings,
              'source': job.source, 'skipped_messages': result.skipped_messages,
              'options': asdict(opts)}
    with open(folder / MARKER, 'w') as out:
        out.write(json.dumps(marker, indent=1, sort_keys=True) + '\n')
        out.flush()
        os.fsync(out.fileno())
    _fsync(folder)
    dst = Path(job.dst)
    replace(dst)  # checks again: only an output of ours (with --force) is ever removed
    folder.rename(dst)
    _fsync(dst.parent)


def run_job(job: Job, opts: BagOptions, pipe: Pipeline,
            on_frames: Callable[[int], None] = lambda n: None) -> BagResult:
    """Process one bag into its output; any failure becomes the result's reason."""
    result = BagResult(job.name, job.src, job.dst, worker=f'{os.uname().nodename}:{os.getpid()}')
    dst = Path(job.dst)
    folder = staging(dst)
    made = False
    t0 = time.perf_counter()
    try:
        clear_staging(dst)  # left by a run that was killed; only if it holds a bag alone
        folder.parent.mkdir(parents=True)
        made = True
        report = process_bag(Path(job.src), folder, opts, pipe, on_frames)
        result.status, result.frames, result.seconds = 'done', report.frames, report.seconds
        result.fps, result.no_camera_info = report.fps, report.no_camera_info
        result.cameras = [asdict(c) for c in report.cameras]
        result.topics, result.skipped_messages = report.topics, report.skipped
        result.frame_warnings = report.warnings
        result.stages_p50_ms, result.notes = report.stages_p50_ms, report.notes
        _commit(job, opts, folder, result)
    except BagError as exc:
        result.reason = str(exc)
    except Exception as exc:  # noqa: B902 - one bag's bug must not stop the others
        result.reason = f'{type(exc).__name__}: {exc}'
        result.traceback = traceback.format_exc()
    finally:
        if made:
            remove_own(folder.parent)
    result.seconds = result.seconds or time.perf_counter() - t0
    return result


LOG_LINES = 100  # pipeline log lines a BagWorker keeps


class BagWorker:
    """Loads the model once, then runs bags one after another (in-process or as a Ray actor)."""

    def __init__(self, cfg: Config, opts: BagOptions) -> None:
        self.cfg, self.opts = cfg, opts
        self.pipe: Optional[Pipeline] = None
        self.frames = 0
        self.loads = 0
        # The pipeline's last lines (backend builds): a worker runs bags for days, and a
        # camera of more network inputs than backends.runner.MAX_MODULES logs one a frame.
        self.log: Deque[str] = deque(maxlen=LOG_LINES)
        self._threads = 0

    def load(self) -> Dict[str, Any]:
        """Load the model (once); return how long it took and what was loaded."""
        t0 = time.perf_counter()
        if self.pipe is None:
            self._threads = torch.get_num_threads()
            torch.set_num_threads(self.opts.threads)
            try:
                self.pipe = Pipeline(self.cfg, log=self.log.append)
                # Engines, sessions and compiles for every batch this worker forms, and for
                # model.warmup_sizes, before the first bag (as the node at activation).
                self.pipe.prepare_all(parse_sizes(self.cfg.model.warmup_sizes),
                                      frames=self.opts.batch)
            except BaseException:
                torch.set_num_threads(self._threads)
                raise
            self.loads += 1
        return {'seconds': time.perf_counter() - t0, 'describe': self.pipe.describe(),
                'worker': f'{os.uname().nodename}:{os.getpid()}', 'loads': self.loads,
                'malloc': memory.settings()}

    def run(self, job: Job, on_frames: Optional[Callable[[int], None]] = None) -> BagResult:
        """Run one bag."""
        self.load()

        def frames(n: int) -> None:
            self.frames = n
            if on_frames is not None:
                on_frames(n)
        self.frames = 0
        built = sum(self.pipe.backend_builds.values())
        result = run_job(job, self.opts, self.pipe, frames)
        result.backend_builds = sum(self.pipe.backend_builds.values()) - built
        return result

    def progress(self) -> int:
        """Frames done in the bag being run (polled by the Ray driver)."""
        return self.frames

    def close(self) -> None:
        """Free the model and give the process its thread count back."""
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
            torch.set_num_threads(self._threads)


# ---------------------------------------------------------------------------- progress


class ProgressBar:
    """One stderr line for the whole run: bags done, frames, frames/s, ETA.

    On a terminal the line is redrawn twice a second; in a log it is a new line every 10 s.
    """

    def __init__(self, bags: int, frames: int, enabled: bool) -> None:
        self.bags, self.total, self.enabled = bags, max(frames, 1), enabled
        self.done_bags = self.done_frames = self.running = 0
        self.tty = sys.stderr.isatty()
        self.every = 0.5 if self.tty else 10.0
        self.t0 = time.monotonic()
        self.last = 0.0

    def line(self) -> str:
        """Return the bar as text."""
        done = self.done_frames + self.running
        rate = done / max(time.monotonic() - self.t0, 1e-9)
        eta = f'{max(self.total - done, 0) / rate:5.0f} s' if rate > 0 else '    ? s'
        bar = '#' * int(24 * min(done / self.total, 1.0))
        return (f'[{bar:<24}] {self.done_bags}/{self.bags} bags  {done} frames  '
                f'{rate:6.1f} frames/s  ETA {eta}')

    def update(self, running_frames: int = 0, force: bool = False) -> None:
        """Redraw with the frames of the bags still running (rate-limited)."""
        self.running = running_frames
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.every and not force):
            return
        self.last = now
        sys.stderr.write(f'\r{self.line()} ' if self.tty else f'{self.line()}\n')
        sys.stderr.flush()

    def finished(self, result: BagResult) -> None:
        """Count a finished bag."""
        self.done_bags += 1
        self.done_frames += result.frames
        self.update(0, force=self.tty)

    def say(self, line: str) -> None:
        """Print a line above the bar."""
        if self.enabled and self.tty:
            sys.stderr.write('\r\033[K')
        print(line, file=sys.stderr)
        self.update(self.running, force=self.tty)

    def close(self) -> None:
        """Draw the final state."""
        if self.enabled:
            self.update(self.running, force=True)
            if self.tty:
                sys.stderr.write('\n')


def _say_result(result: BagResult, say: Callable[[str], None], single: bool) -> None:
    prefix = 'dpt_bag: ' if single else f'dpt_bag: {result.bag}: '
    for note in result.notes:
        say(prefix + note)
    if result.status == 'failed':
        say(f'{prefix}error: {result.reason}')


def _report_finished(result: BagResult, bar: ProgressBar, single: bool) -> None:
    _say_result(result, bar.say, single)
    bar.finished(result)


# ---------------------------------------------------------------------------- runners


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide to run with Ray."""

    address: str = 'local'                   # 'local': a new Ray for this run; 'auto'; host:port
    workers: int = 0                         # 0: as many as the cluster's GPUs / CPUs allow


def run_serial(jobs: Sequence[Job], cfg: Config, opts: BagOptions, bar: ProgressBar,
               single: bool, log: Callable[[str], None]) -> Tuple[List[BagResult], Dict]:
    """Run the bags one after another in this process, with one model."""
    worker = BagWorker(cfg, opts)
    results = []
    info = worker.load()
    log(f"model ready in {info['seconds']:.1f} s: "
        + ', '.join(f'{k}={v}' for k, v in info['describe'].items()))
    try:
        for job in jobs:
            t0 = time.perf_counter()
            result = worker.run(job, on_frames=lambda n: bar.update(n))
            result.wall_seconds = time.perf_counter() - t0
            _report_finished(result, bar, single)
            results.append(result)
    finally:
        worker.close()
    return results, {'model_load_seconds': round(info['seconds'], 3), 'model_loads': 1,
                     'malloc': info['malloc']}


def import_ray() -> Any:
    """Import Ray or say how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise BagError(RAY_INSTALL) from exc
    return ray


def _uses_gpu(cfg: Config, cluster: Dict[str, float]) -> bool:
    device = cfg.model.device
    return device.startswith('cuda') or (device == 'auto' and cluster.get('GPU', 0) > 0)


def run_ray(jobs: Sequence[Job], cfg: Config, opts: BagOptions, ray_opts: RayOptions,
            bar: ProgressBar, log: Callable[[str], None]) -> Tuple[List[BagResult], Dict]:
    """Run the bags as Ray tasks on a pool of actors (one model each); return results + stats."""
    ray = import_ray()
    local = {'include_dashboard': False} if ray_opts.address == 'local' else {}
    try:
        init_seconds = _ray_init(ray, ray_opts, local)
        pool = _RayPool(ray, jobs, cfg, opts, ray_opts, bar, log)
        pool.stats['init_seconds'] = init_seconds
        return pool.run(), pool.stats
    finally:
        ray.shutdown()  # also after a start that failed half-way


def _ray_init(ray: Any, ray_opts: RayOptions, local: Dict[str, Any]) -> float:
    """Start or join Ray, keeping the caller's SIGTERM handling; return the seconds it took.

    ray.init makes SIGTERM sys.exit(15), which would read as 15 failed bags: the caller's
    handler (dpt_bag's: interrupted, 143) is put back, and a SIGTERM that came during
    ray.init is handed to it.
    """
    t0 = time.perf_counter()
    on_term = signal.getsignal(signal.SIGTERM)
    termed = False
    try:
        ray.init(address=ray_opts.address, ignore_reinit_error=True,
                 logging_level=logging.WARNING, **local)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise BagError(f"could not start or join Ray at '{ray_opts.address}': "
                       f'{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}'
                       ) from exc
    except SystemExit as exc:
        if exc.code != signal.SIGTERM or on_term is None:
            raise
        termed = True
    finally:
        if on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    if termed:
        signal.raise_signal(signal.SIGTERM)
    return round(time.perf_counter() - t0, 3)


class _RayPool:
    """A pool of BagWorker actors: each loads the model once, then takes bags until none are left.

    Failures are per bag: a bag's own error comes back as its result; a worker that dies fails
    its bag and is replaced. A model that does not load stops the run (every bag would fail).
    """

    def __init__(self, ray: Any, jobs: Sequence[Job], cfg: Config, opts: BagOptions,
                 ray_opts: RayOptions, bar: ProgressBar, log: Callable[[str], None]) -> None:
        self.ray, self.bar, self.log = ray, bar, log
        cluster = ray.cluster_resources()
        self.gpu = _uses_gpu(cfg, cluster)
        room = _room(ray, cfg, opts.threads, self.gpu, cluster)
        if self.gpu:
            # Ray makes each task's GPU the only visible one: cuda:N would not exist there.
            cfg = cfg.replace({'model.device': 'cuda'})
            ask = {'num_gpus': 1, 'num_cpus': opts.threads}
        else:
            ask = {'num_cpus': opts.threads}
        # More --workers than fit wait for room (oversubscribed); none fitting waits forever.
        self.size = min(ray_opts.workers or room, len(jobs))
        each = f'1 GPU + {opts.threads} CPU' if self.gpu else f'{opts.threads} CPU'
        log(f'Ray: {self.size} workers, each {each} (cluster: {cluster.get("CPU", 0):g} CPU, '
            f'{cluster.get("GPU", 0):g} GPU)')
        if cfg.memory.keep_freed:
            # Read by glibc when the worker process starts: its bags run on a thread of the
            # actor, whose buffers then come from the main heap (see core/memory.py).
            tunables = ':'.join(filter(None, (os.environ.get('GLIBC_TUNABLES'), memory.TUNABLES)))
            ask['runtime_env'] = {'env_vars': {'GLIBC_TUNABLES': tunables}}
        self.actor_cls = ray.remote(**ask, max_concurrency=2)(BagWorker)
        self.args = (cfg, opts)
        self.queue = list(jobs)
        self.results: List[BagResult] = []
        self.pending: Dict[Any, Tuple] = {}   # ref -> ('load', actor, t) / ('run', actor, job, t)
        self.spare_starts = len(jobs)         # replacements for workers that die, bounded
        self.stats: Dict[str, Any] = {'workers': self.size, 'gpu': self.gpu,
                                      'worker_start_seconds': [], 'model_load_seconds': [],
                                      'model_loads': 0, 'worker_malloc': []}

    def run(self) -> List[BagResult]:
        """Run every job; return the results in the order they finished."""
        for _ in range(self.size):
            self._start_worker()
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=0.5)
            for ref in ready:
                self._finished(ref)
            self._show_progress()
        done = sorted(r.wall_seconds - r.seconds for r in self.results if r.status == 'done')
        self.stats['per_bag_overhead_seconds_p50'] = \
            round(done[len(done) // 2], 4) if done else None
        return self.results

    def _start_worker(self) -> None:
        actor = self.actor_cls.remote(*self.args)
        self.pending[actor.load.remote()] = ('load', actor, time.perf_counter())

    def _give_work(self, actor: Any) -> None:
        if self.queue:
            job = self.queue.pop(0)
            self.pending[actor.run.remote(job)] = ('run', actor, job, time.perf_counter())

    def _finished(self, ref: Any) -> None:
        kind, actor, *rest = self.pending.pop(ref)
        try:
            value = self.ray.get(ref)
        except self.ray.exceptions.RayError as exc:
            if kind == 'load':
                raise BagError('the model did not load on a Ray worker: '
                               f'{_ray_reason(exc)}') from exc
            job, t_submit = rest
            value = BagResult(job.name, job.src, job.dst,
                              reason=f'Ray worker died: {_ray_reason(exc)}')
            actor = None
            if self.queue and self.spare_starts > 0:
                self.spare_starts -= 1
                self._start_worker()
        if kind == 'load':
            self._worker_ready(value, time.perf_counter() - rest[0])
        else:
            value.wall_seconds = time.perf_counter() - rest[1]
            _report_finished(value, self.bar, False)
            self.results.append(value)
        if actor is not None:
            self._give_work(actor)

    def _worker_ready(self, info: Dict[str, Any], startup: float) -> None:
        self.stats['worker_start_seconds'].append(round(startup - info['seconds'], 3))
        self.stats['model_load_seconds'].append(round(info['seconds'], 3))
        self.stats['model_loads'] += info['loads']
        self.stats['worker_malloc'].append(info['malloc'])
        self.log(f"Ray worker {info['worker']} ready in {startup:.1f} s "
                 f"(model {info['seconds']:.1f} s)")

    def _show_progress(self) -> None:
        busy = [info[1] for info in self.pending.values() if info[0] == 'run']
        try:
            self.bar.update(sum(self.ray.get([a.progress.remote() for a in busy], timeout=5)))
        except self.ray.exceptions.RayError:
            pass  # a worker that died is reported with its bag


def _room(ray: Any, cfg: Config, threads: int, gpu: bool, cluster: Dict[str, float]) -> int:
    """Return how many workers the cluster's live nodes hold; BagError if not one fits.

    Ray would keep a worker no node can hold pending forever, without a word.
    """
    nodes = [n.get('Resources', {}) for n in ray.nodes() if n.get('Alive')]
    fit = [int(n.get('CPU', 0) // threads) for n in nodes]
    room = sum(min(k, int(n.get('GPU', 0))) if gpu else k for k, n in zip(fit, nodes))
    if room:
        return room
    have = f"{cluster.get('CPU', 0):g} CPU, {cluster.get('GPU', 0):g} GPU"
    if gpu and not cluster.get('GPU', 0):
        raise BagError(f"model.device is '{cfg.model.device}' but the Ray cluster has no GPU "
                       f"({have}); use 'auto' or 'cpu', or join a cluster with GPUs")
    each = f'1 GPU and {threads} CPU' if gpu else f'{threads} CPU'
    raise BagError(f'a Ray worker asks for {each} (--threads {threads}) and no node of the Ray '
                   f'cluster ({have}) has that much: lower --threads')


def _ray_reason(exc: BaseException) -> str:
    cause = getattr(exc, 'cause', None) or exc
    text = str(cause).strip().splitlines()
    return text[-1][:300] if text else type(cause).__name__


# ---------------------------------------------------------------------------- summary


def summary_table(results: Sequence[BagResult]) -> str:
    """Per bag: frames, time, frames/s and status, as an aligned text table."""
    width = max([len(r.bag) for r in results] + [3])
    rows = [f"{'bag':<{width}}  {'frames':>7}  {'time s':>8}  {'frames/s':>8}  status"]
    for r in results:
        # A reason may list topics on lines of their own: one line here, the list included.
        first, *more = r.reason.splitlines() or ['']
        status = r.status if r.status != 'failed' else \
            f"failed: {' '.join([first, ', '.join(m.strip() for m in more)]).strip()}"
        if r.status == 'skipped':
            status = f'skipped: {r.reason}'
        timing = f'{r.seconds:8.2f}  {r.fps:8.1f}' if r.status == 'done' else \
            f"{'-':>8}  {'-':>8}"
        rows.append(f'{r.bag:<{width}}  {r.frames:>7}  {timing}  {status}')
    return '\n'.join(rows)


def totals(results: Sequence[BagResult], wall: float) -> Dict[str, Any]:
    """Return counts by status, frames and frames/s over the whole run."""
    frames = sum(r.frames for r in results)
    return {'bags': len(results), 'frames': frames, 'wall_seconds': round(wall, 3),
            'fps': round(frames / wall, 3) if wall > 0 else 0.0,
            **{s: sum(r.status == s for r in results) for s in ('done', 'skipped', 'failed')}}


def write_summary(path: Path, results: Sequence[BagResult], wall: float,
                  extra: Dict[str, Any]) -> None:
    """Write the summary as JSON: per-bag results, totals, and how it ran."""
    doc = {'totals': totals(results, wall), **extra, 'bags': [asdict(r) for r in results]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(doc, indent=1) + '\n')
    tmp.replace(path)


# ---------------------------------------------------------------------------- the whole run


def run_bags(jobs: Sequence[Job], cfg: Config, opts: BagOptions, force: bool,
             ray_opts: Optional[RayOptions], bar_enabled: bool, single: bool,
             log: Callable[[str], None]) -> Tuple[List[BagResult], Dict[str, Any]]:
    """Triage, plan and run every job; return the results in input order and how it ran."""
    t0 = time.perf_counter()
    results: Dict[str, BagResult] = {}
    todo: List[Job] = []
    expected: Dict[str, int] = {}
    settings = settings_digest(cfg, opts, weights_digest(cfg))
    jobs = [dataclasses.replace(j, settings=settings, source=input_digest(j.src)) for j in jobs]
    for job in jobs:
        early = triage(job, force)
        if early is None:
            expected[job.name], reason = expected_frames(job, opts, cfg)
            early = BagResult(job.name, job.src, job.dst, reason=reason) if reason else None
        if early is not None:
            results[job.name] = early
        else:
            todo.append(job)
    for r in results.values():
        _say_result(r, lambda line: print(line, file=sys.stderr), single)
    bar = ProgressBar(len(todo), sum(expected.values()), bar_enabled and bool(todo))
    how: Dict[str, Any] = {'runner': 'ray' if ray_opts else 'serial'}
    done: List[BagResult] = []
    try:
        if todo and ray_opts is not None:
            done, how['ray'] = run_ray(todo, cfg, opts, ray_opts, bar, log)
        elif todo:
            done, how['serial'] = run_serial(todo, cfg, opts, bar, single, log)
    finally:
        bar.close()
    results.update((r.bag, r) for r in done)
    for name, n in expected.items():
        results[name].expected_frames = n
    how['wall_seconds'] = round(time.perf_counter() - t0, 3)
    return [results[j.name] for j in jobs], how
