# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""`dpt_bag`: run dpt_ros over one bag or many (serially, or on Ray) into new bags.

Exit status: 0 when every bag is done or skipped as complete; N (1 to 100) when N bags failed
(100 means 100 or more); 101 when nothing ran (bad options or parameters, an output that is
not dpt_bag's to replace or cannot be written, a model that does not load, Ray asked for and
not installed, Ray workers that no node can hold); 130 on Ctrl-C, 143 on SIGTERM (both: finished
outputs kept, the bag under way left unfinished for the next run to redo).
"""

from __future__ import annotations

import argparse
import faulthandler
from pathlib import Path
import signal
import sys
import threading
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from dpt_ros.core.config import Config, config_from_flat, ConfigError
from dpt_ros.core.models import ModelLoadError
from dpt_ros.core.params import config_from_params_file, parse_camera_list
from dpt_ros.offline.bag import (BAG_VERSIONS, BagError, BagOptions, compatibility_note, is_bag,
                                 STORAGES)
from dpt_ros.offline.runs import (BagResult, check_outputs, check_targets, in_input_order,
                                  make_jobs, RayOptions, run_bags, split_without_metadata, SUMMARY,
                                  summary_table, totals, write_summary)
from dpt_ros.offline.targets import output_path

EXIT_NOTHING_RAN = 101
MAX_FAILED_EXIT = 100
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 128 + signal.SIGTERM


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_NOTHING_RAN, f'{self.prog}: error: {message}\n')


def parser() -> argparse.ArgumentParser:
    """Command-line interface of dpt_bag."""
    ap = _Parser(
        prog='dpt_bag', description='Run dpt_ros over rosbag2 bags (sqlite3 or mcap) and write '
        'depth, points and segmentation into new bags, stamped like the source frames.',
        epilog='Exit status: 0 all done (or complete already), N = N bags failed (at most 100), '
        '101 = nothing ran, 130 = Ctrl-C, 143 = SIGTERM.')
    ap.add_argument('inputs', nargs='+', metavar='INPUT',
                    help='a bag (rosbag2 folder, .mcap or .db3 file) or a folder of bags')
    ap.add_argument('output', metavar='OUTPUT',
                    help='the output bag for one input bag; for several inputs or a folder of '
                    'bags, the folder that gets one output bag per input, named after it')
    cams = ap.add_argument_group(
        'cameras', "One camera by default: the bag's only image topic. For several, repeat "
        "--image-topic (outputs under each image topic's namespace) or name the cameras like "
        "the node's `cameras` (outputs under NAMESPACE/C). The other topic options are then "
        'given once per camera, in the same order, or not at all (auto-detected).')
    cams.add_argument('--image-topic', action='append', metavar='TOPIC',
                      help='image topic (Image or CompressedImage) of a camera; repeat it for '
                      'several cameras; with --cameras, the topic camera C reads instead of '
                      'C/image (a remap)')
    cams.add_argument('--cameras', type=parse_camera_list, metavar='C1,C2',
                      help="override the params file's `cameras` ('front,rear' or "
                      "'[front, rear]'): camera C reads NAMESPACE/C/image (or image/compressed, "
                      'or the one image topic in NAMESPACE/C) and NAMESPACE/C/camera_info; '
                      "'' for one camera")
    cams.add_argument('--camera-info-topic', action='append', metavar='TOPIC',
                      help="CameraInfo topic (per camera); auto: the one in the image topic's "
                      'namespace')
    cams.add_argument('--anchors-topic', action='append', metavar='TOPIC',
                      help='with anchors.source set (depth.mode fitted): the recorded depth '
                      'image (depth_image) or PointCloud2 (points) topic (per camera); auto: '
                      'with one camera the only other topic of that type, with several '
                      "each camera's anchors/depth or anchors/points, as the node")
    cams.add_argument('--anchors-info-topic', action='append', metavar='TOPIC',
                      help='CameraInfo of an anchor depth image of another size (per camera); '
                      'auto-detected beside the anchors topic')
    cams.add_argument('--namespace', help="the node's namespace: outputs go to NAMESPACE/... "
                      "(one camera; default: the image topic's namespace) or NAMESPACE/C/... "
                      '(named cameras; default: none)')
    ap.add_argument('--params-file', help="the node's params YAML (same file as ros2 launch)")
    ap.add_argument('--node-name', default='dpt', help='node section in the params file')
    ap.add_argument('--model', help='override model.depth (folder or hub id)')
    ap.add_argument('--segmentation', help='override model.segmentation')
    ap.add_argument('--device', help='override model.device')
    ap.add_argument('--storage', choices=STORAGES, default='sqlite3',
                    help='output storage (default sqlite3: every ROS 2 install plays it; '
                    'Humble needs ros-humble-rosbag2-storage-mcap for mcap)')
    ap.add_argument('--bag-version', type=int, choices=BAG_VERSIONS, default=8,
                    help='rosbag2 metadata version (default 8: Humble, Jazzy and Kilted read '
                    'it; Humble cannot read 9)')
    ap.add_argument('--copy-inputs', action='store_true',
                    help='copy the image and camera_info topics into the output bag')
    ap.add_argument('--batch', type=int, default=4,
                    help='most frames per forward pass (of one network input, from any camera)')
    ap.add_argument('--start', type=float, default=0.0, help='seconds from the bag start')
    ap.add_argument('--end', type=float, help='seconds from the bag start (exclusive)')
    ap.add_argument('--every', type=int, default=1,
                    help='process every N-th frame (of each camera)')
    ap.add_argument('--threads', type=int, default=1,
                    help='CPU threads per bag (with --ray: CPUs each task asks for). On the CPU '
                    'the output bytes depend on it: runs with the same value are identical')
    ap.add_argument('--no-points', action='store_true', help='do not write points')
    ap.add_argument('--no-viewers', action='store_true',
                    help='do not write colored depth / segmentation viewing images')
    ap.add_argument('--force', action='store_true',
                    help='redo every output (by default complete ones are skipped); only '
                    "dpt_bag's own outputs are ever replaced")
    ap.add_argument('--summary-json', metavar='PATH',
                    help=f'write the summary here (default for several bags: OUTPUT/{SUMMARY})')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')
    ray = ap.add_argument_group('Ray (pip install dpt_ros[ray])')
    ray.add_argument('--ray', nargs='?', const='local', metavar='ADDRESS',
                     help="run each bag as a Ray task: no ADDRESS (or 'local') starts a local "
                     "Ray for this run, 'auto' joins the running cluster, or host:port / "
                     'ray://host:port')
    ray.add_argument('--workers', type=int, default=0,
                     help='Ray workers, each loading the model once (default: one per GPU when '
                     'the model runs on CUDA, else one per --threads CPUs)')
    return ap


def _ray_flag_first(argv: List[str]) -> List[str]:
    """`--ray IN1 IN2 OUT`: a path after a bare --ray is an input, not an address."""
    out = list(argv)
    for i, tok in enumerate(out[:-1]):
        nxt = out[i + 1]
        if tok == '--ray' and not (nxt in ('auto', 'local') or ':' in nxt or
                                   nxt.startswith('-')):
            out[i] = '--ray=local'
    return out


def options_from_args(args: argparse.Namespace, cameras: Sequence[str] = ()) -> BagOptions:
    """Return the per-bag options of the command line (cameras: the node's `cameras`)."""
    return BagOptions(
        image_topics=tuple(args.image_topic or ()),
        camera_info_topics=tuple(args.camera_info_topic or ()),
        anchors_topics=tuple(args.anchors_topic or ()),
        anchors_info_topics=tuple(args.anchors_info_topic or ()), namespace=args.namespace,
        storage=args.storage, version=args.bag_version,
        copy_inputs=args.copy_inputs, batch=args.batch, start=args.start, end=args.end,
        every=args.every, points=not args.no_points, viewers=not args.no_viewers,
        threads=args.threads).validate(cameras)


def build_config(args: argparse.Namespace) -> Config:
    """Config from --params-file (same YAML as the node) plus command-line overrides."""
    overrides = {k: v for k, v in (('model.depth', args.model),
                                   ('model.segmentation', args.segmentation),
                                   ('model.device', args.device),
                                   ('cameras', args.cameras)) if v is not None}
    if args.params_file:
        return config_from_params_file(
            args.params_file, args.node_name, overrides,
            lambda m: print(f'dpt_bag: warning: {m}', file=sys.stderr))
    return config_from_flat(overrides)


def ray_options(args: argparse.Namespace) -> Optional[RayOptions]:
    """Return RayOptions for --ray, None without it."""
    if args.ray is None:
        if args.workers:
            raise BagError('--workers needs --ray')
        return None
    if args.workers < 0:
        raise BagError('--workers must be >= 0')
    return RayOptions(args.ray, args.workers)


def _print_single(r: BagResult) -> None:
    if r.status != 'done':
        if r.status == 'skipped':
            print(f'{r.output}: skipped, {r.reason}')
        return
    print(f'processed {r.frames} frames in {r.seconds:.2f} s ({r.fps:.1f} frames/s) '
          f'-> {r.output}')
    if r.stages_p50_ms:
        stages = ', '.join(f'{k} {v:.1f}' for k, v in r.stages_p50_ms.items())
        print(f'per-stage p50 (ms): {stages}')
    if len(r.cameras) > 1:
        for c in r.cameras:
            print(f"camera {c['name']}: {c['image_topic']} -> {c['namespace']}/..., "
                  f"{c['frames']} frames")
    for topic, n in r.topics.items():
        print(f'  {topic}: {n} messages')
    if r.skipped_messages:
        print('skipped: ' + ', '.join(f'{k} {v}' for k, v in r.skipped_messages.items()))


def _write_summary(path: str, results: List[BagResult], how: Dict[str, Any]) -> bool:
    """Write the summary JSON; on failure say so in one line (the bags' outputs stand)."""
    try:
        write_summary(Path(path), results, how['wall_seconds'], how)
    except OSError as exc:
        print(f"dpt_bag: error: the summary could not be written to '{path}': "
              f'{exc.strerror or exc}', file=sys.stderr)
        return False
    return True


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of `dpt_bag`."""
    args = parser().parse_args(_ray_flag_first(sys.argv[1:] if argv is None else argv))
    if argv is None:  # the dpt_bag process: a native crash prints every thread's stack
        try:
            faulthandler.enable()
        except (AttributeError, OSError, ValueError):  # no usable stderr
            pass
    if threading.current_thread() is not threading.main_thread():
        return _main(args)  # only the main thread handles signals
    terminated: List[int] = []

    def terminate(signum: int, frame: Any) -> NoReturn:
        # SIGTERM (a scheduler, `kill`) stops the run as Ctrl-C does, serial or Ray. Ray turns
        # an exception raised in its waits into a KeyboardInterrupt of its own: hence the flag.
        terminated.append(signum)
        raise KeyboardInterrupt()
    before = signal.signal(signal.SIGTERM, terminate)
    try:
        rc = _main(args)
    finally:
        signal.signal(signal.SIGTERM, before)
    return EXIT_TERMINATED if terminated and rc == EXIT_INTERRUPTED else rc


def _main(args: argparse.Namespace) -> int:
    try:
        cfg = build_config(args)
        opts = options_from_args(args, cfg.cameras)
        ray_opts = ray_options(args)
        jobs, bad, several = make_jobs(args.inputs, args.output)
        for note in split_without_metadata(args.inputs):
            print(f'dpt_bag: warning: {note}', file=sys.stderr)
        summary = args.summary_json or (str(output_path(args.output) / SUMMARY)
                                        if several else None)
        check_outputs(jobs, [summary] if summary else [])
        check_targets(jobs, summary)  # before the model loads: nothing run, nothing lost
        if any(is_bag(Path(j.src)) for j in jobs):  # announce only what will be written
            print(f'writing {compatibility_note(opts.storage, opts.version)}', file=sys.stderr)
        results, how = run_bags(jobs, cfg, opts, args.force, ray_opts, not args.quiet,
                                not several, lambda m: print(m, file=sys.stderr))
    except (BagError, ConfigError, ModelLoadError) as exc:
        print(f'dpt_bag: error: {exc}', file=sys.stderr)
        return EXIT_NOTHING_RAN
    except KeyboardInterrupt:
        print('dpt_bag: interrupted: finished outputs are kept, run the same command again to '
              'do the rest', file=sys.stderr)
        return EXIT_INTERRUPTED
    results = in_input_order(results + bad, args.inputs)
    if summary and not _write_summary(summary, results, how):
        summary = None
    if several:
        print(summary_table(results))
        t = totals(results, how['wall_seconds'])
        print(f"{t['done']} done, {t['skipped']} skipped, {t['failed']} failed: {t['frames']} "
              f"frames in {t['wall_seconds']:.1f} s ({t['fps']:.1f} frames/s)"
              + (f'; summary in {summary}' if summary else ''))
    else:
        _print_single(results[0])
    return min(sum(r.status == 'failed' for r in results), MAX_FAILED_EXIT)


if __name__ == '__main__':
    sys.exit(main())
