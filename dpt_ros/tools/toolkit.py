# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Helpers shared by the command-line tools and the tests (demo, benchmark, DDS clients).

Starting and stopping a dpt_node process, its params file, the packaged Fast DDS profile,
latency summaries and printing. Nothing here imports the tools back, nor torch, nor rclpy
(only profile_env asks rclpy which Fast DDS it loads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
import json
import math
import os
from pathlib import Path
import shutil
import subprocess
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from dpt_ros.core.reports import percentile
from dpt_ros.ros import fastdds


def say(text: str) -> None:
    """Print a line now (the tools' progress goes to pipes read line by line)."""
    print(text, flush=True)


def packaged_config(name: str) -> Optional[Path]:
    """Find a file of this package's config/ folder (installed share/ or a source checkout)."""
    candidates = [Path(__file__).resolve().parents[2] / 'config' / name,  # source checkout
                  Path(sys.prefix) / 'share' / 'dpt_ros' / 'config' / name]
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory('dpt_ros')) / 'config' / name)
    except Exception:  # noqa: B902 - ament_index is optional; any failure means 'not there'
        pass
    return next((p for p in candidates if p.is_file()), None)


def profile_env() -> Dict[str, str]:
    """Env vars that give the tools' DDS processes a Fast DDS profile in effect.

    The profile the user named (through either variable), else the packaged large-frame one,
    through the variable this Fast DDS reads (fastdds.py: Jazzy ignores FASTDDS_...).
    """
    named = fastdds.profile_in_effect(os.environ, None)  # either variable
    profile = named or packaged_config('fastdds_large_frames.xml')
    if not profile:
        return {}
    return fastdds.profile_env(str(profile), fastdds.fastdds_major())


def node_command(executable: str = 'dpt_node') -> List[str]:
    """Return the command that starts dpt_node or dpt_lifecycle_node (this environment's first)."""
    exe = Path(sys.executable).parent / executable
    if exe.exists():
        return [str(exe)]
    found = shutil.which(executable)
    if found:
        return [found]
    entry = 'lifecycle_main' if executable == 'dpt_lifecycle_node' else 'main'
    return [sys.executable, '-c', f'import sys; from dpt_ros.ros.entry import {entry}; '
            f'sys.exit({entry}())']


def write_params_file(path: Union[str, Path], params: Dict[str, Any]) -> Path:
    """Write a ROS 2 params file (a /** section, nested groups) from dotted names."""
    import yaml
    tree: Dict[str, Any] = {}
    for name, value in params.items():
        group, _, key = name.partition('.')
        if key:
            tree.setdefault(group, {})[key] = value
        else:
            tree[group] = value
    path = Path(path)
    path.write_text(yaml.safe_dump({'/**': {'ros__parameters': tree}}))
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> Optional[int]:
    """Stop a node process as Ctrl-C does (SIGINT), killing it if it hangs; return its code."""
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def process_counters(pid: int) -> Dict[str, float]:
    """Return a process's minor page faults, CPU ms, context switches (Linux; {} if gone).

    Context switches are summed over its threads alive now (voluntary: waited; involuntary:
    preempted).
    """
    try:
        stat = Path(f'/proc/{pid}/stat').read_text()
        tasks = list(Path(f'/proc/{pid}/task').iterdir())
    except OSError:
        return {}
    fields = stat[stat.rindex(')') + 2:].split()  # after 'pid (comm) '
    tick_ms = 1e3 / os.sysconf('SC_CLK_TCK')
    out = {'minor_faults': float(fields[7]),
           'cpu_ms': (int(fields[11]) + int(fields[12])) * tick_ms,
           'voluntary_switches': 0.0, 'involuntary_switches': 0.0}
    for task in tasks:
        try:
            lines = (task / 'status').read_text().splitlines()
        except OSError:
            continue  # a thread that ended meanwhile
        for line in lines:
            key, _, value = line.partition(':')
            if key in ('voluntary_ctxt_switches', 'nonvoluntary_ctxt_switches'):
                name = 'voluntary' if key.startswith('vol') else 'involuntary'
                out[f'{name}_switches'] += int(value)
    return out


def summary(values: Sequence[float]) -> Dict[str, float]:
    """Return p50 / p95 / mean / n of a list of milliseconds."""
    return {'p50': float(percentile(values, 50)), 'p95': float(percentile(values, 95)),
            'mean': float(np.mean(values)) if len(values) else float('nan'), 'n': len(values)}


@dataclass
class Saved:
    """What one frame produced, as arrays by output name (from messages or a Result)."""

    arrays: Dict[str, np.ndarray] = field(default_factory=dict)
    cloud: Optional[Tuple[np.ndarray, Optional[np.ndarray]]] = None  # xyz, rgb uint8
    # The cloud's other fields by name (normal_x, normal_y, normal_z, label), point by point.
    cloud_fields: Dict[str, np.ndarray] = field(default_factory=dict)
    latency_ms: float = float('nan')


def jsonable(obj: Any) -> Any:
    """Make results JSON-safe: NaN/inf -> null, numpy scalars -> Python, '_' keys dropped."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items() if not str(k).startswith('_')}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(out: Path, res: Dict[str, Any], markdown: Callable[[Dict[str, Any]], str],
                 plot: Callable[[Dict[str, Any], Path], bool], png: str) -> None:
    """Write results.json, results.md and a plot to a folder, and print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(jsonable(res), indent=1))
    md = markdown(res)
    (out / 'results.md').write_text(md + '\n')
    made = plot(res, out / png)
    say('\n' + md)
    say(f"wrote {out / 'results.json'}, {out / 'results.md'}"
        + (f', {out / png}' if made else ' (no matplotlib: no plot)'))


def pyplot() -> Any:
    """Return matplotlib.pyplot drawing to files only (Agg), or None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
