# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The GPU check: one planned, time-boxed run of GPU tests and benchmarks (scripts/gpu_check.sh).

Made for a CUDA machine that reaches no package registry and gives one command a few minutes:
it uses the machine's own torch and transformers, installs only carried wheels that add what
the machine lacks (never over its torch), runs the steps ordered by value, each in its own
process under its own time limit, and writes every figure the moment it has it (OUT/run.json,
OUT/summary.md, one OUT/bench_<model>.json per model), so a run cut short keeps all it measured.
The planner, the records and the report use only the standard library: the CI dry run plans
against a machine description, and the record between two steps starts in a blink.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field
import importlib.metadata
import importlib.util
import json
import math
import os
from pathlib import Path
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = 540      # one command may run 600 s there: the rest covers start-up and copying back
RESERVE_S = 15      # kept for the last records and the closing table
MAX_FILES = 8       # what comes back from the machine, at most 2 folders down
CARRY_LIMIT_MIB = 64  # the working tree and the carried wheels together
MODELS = ('hybrid-depth', 'large-depth')  # Intel/dpt-hybrid-midas and Intel/dpt-large shapes
SIZES = ((640, 480), (1280, 720))
PRECISIONS = ('fp16', 'bf16', 'fp32')     # fp16 first: model.precision auto on CUDA
BACKEND_ORDER = ('torch', 'compile', 'compile-nograph', 'tensorrt', 'onnxruntime')
BACKEND_LABEL = {'compile': 'compile+graphs', 'compile-nograph': 'compile, no graphs'}
# What the machine must have: the node's core (requirements/core.txt) and pytest.
CORE = ('torch', 'transformers', 'safetensors', 'numpy', 'opencv-python-headless', 'pyyaml',
        'pytest')
SHOWN = CORE[:5] + ('onnxruntime', 'onnxruntime-gpu', 'tensorrt', 'ros-jazzy-rclpy')
# Never carried: replacing any of these would change the machine's own torch stack.
TORCH_FAMILY = re.compile(r'^(torch|torchvision|torchaudio|triton|pytorch-triton)$|^nvidia-')
# Parameters in millions, for the estimates (published checkpoints' sizes).
PARAMS_M = {'hybrid-depth': 123, 'large-depth': 343, 'base-depth': 112, 'small-depth': 22,
            'da2-small': 25, 'da2-base': 98, 'da2-large': 335}
# Seconds on one H200 (16 cores) by estimate, per step kind; p = parameters in millions.
# Every run prints each step's estimate beside what it took: correct these from that.
ESTIMATE = {
    'env': lambda p: 15.0,        # torch import, CUDA init, bf16 matmul and copy ceilings
    'tests': lambda p: 45.0,      # gpu-marked tests on tiny models, CPU references included
    'eager': lambda p: 20 + 0.13 * p,    # random checkpoint, 3 precisions x sizes, autotune
    'compile': lambda p: 50 + 0.2 * p,   # inductor twice (with / without CUDA graphs)
    'dds': lambda p: 55 + 0.02 * p,      # node + 4 publisher processes + relay floor
    'tests-compile': lambda p: 60.0,     # two tests compiling tiny depth + seg models
    'tensorrt': lambda p: 90 + 0.5 * p,  # ONNX export + engine build per size
    'onnxruntime': lambda p: 30 + 0.1 * p,
    'naive': lambda p: 15 + 0.03 * p,    # CPU point cloud per frame: 3 frames only
}
INSTALL_ESTIMATE_S = 15.0
# CPU work on GPU time: planned only when named in --steps.
ON_REQUEST = ('naive',)
WHAT = {
    'env': 'GPU, driver, clocks; bf16 matmul and device copy ceilings',
    'tests': 'gpu-marked tests but compile (pytest -m gpu)',
    'eager': 'eager torch {precisions}: bare forward + in-process pipeline per size',
    'compile': 'torch.compile fp16 with CUDA graphs (model.backend compile), then without',
    'dds': 'DDS end to end: publisher -> dpt_node -> subscriber processes, relay floor',
    'tests-compile': 'gpu-marked compile tests',
    'tensorrt': 'TensorRT engine, fp16, per size',
    'onnxruntime': 'ONNX Runtime CUDAExecutionProvider, fp16, per size',
    'naive': 'naive wrapper (transformers processor + Python-list cloud), 3 frames',
}


def say(msg: str) -> None:
    """Print a line of the run's log at once."""
    print(msg, flush=True)


def norm(name: str) -> str:
    """Return a distribution name as pip compares them (PEP 503)."""
    return re.sub(r'[-_.]+', '-', name).lower()


# ------------------------------------------------------------------ the machine

def read_description(path: Path) -> Dict[str, Any]:
    """Read a machine description: `key: value` lines, then `packages:` and `  name [version]`."""
    facts: Dict[str, Any] = {'source': str(path), 'packages': {}}
    in_packages = False
    for raw in path.read_text().splitlines():
        line = raw.split('#', 1)[0].rstrip()
        if not line:
            continue
        if in_packages and raw[:1].isspace():
            name, _, version = line.strip().partition(' ')
            facts['packages'][norm(name)] = version.strip()
            continue
        key, _, value = line.partition(':')
        key, value = key.strip(), value.strip()
        in_packages = key == 'packages'
        if key == 'onnxruntime-providers':
            facts['ort_providers'] = [v.strip() for v in value.split(',') if v.strip()]
        elif key in ('bf16', 'cuda_available'):
            facts[key] = value.lower() in ('yes', 'true', '1')
        elif not in_packages:
            facts[key] = value
    facts['cuda_available'] = facts.get('cuda_available', 'gpu' in facts)
    return facts


def probe_packages() -> Dict[str, Any]:
    """Return this interpreter and its installed distributions (importing none of them)."""
    pkgs = {}
    for d in importlib.metadata.distributions():
        name = d.metadata['Name']
        if name:
            pkgs.setdefault(norm(name), d.version)
    return {'source': 'this machine', 'python': sys.version.split()[0],
            'executable': sys.executable, 'packages': pkgs}


def machine_facts(args: argparse.Namespace) -> Dict[str, Any]:
    """Return the machine's facts: the description file's in a dry run, else probed."""
    if args.machine:
        return read_description(Path(args.machine))
    return probe_packages()


def versions_line(facts: Dict[str, Any]) -> str:
    """One line: the Python and the versions of what the run uses."""
    pk = facts['packages']
    parts = [f"python {facts.get('python', '?')}"]
    parts += [f"{n} {pk[norm(n)] or 'present'}" for n in SHOWN if norm(n) in pk]
    missing = [n for n in SHOWN if norm(n) not in pk]
    return ', '.join(parts) + (f"; absent: {', '.join(missing)}" if missing else '')


# ------------------------------------------------------------------ carried wheels

def wheel_tags(path: Path) -> Tuple[str, str, str]:
    """Return (distribution name, version, python tag) of a wheel file name."""
    parts = path.name[:-len('.whl')].split('-')
    return norm(parts[0]), parts[1], parts[-3]


def install_plan(facts: Dict[str, Any], wheels: List[Path]
                 ) -> Tuple[List[Path], List[Tuple[str, str]]]:
    """Split carried wheels into those to install and those left out, each with why."""
    have = facts['packages']
    major, minor = facts.get('python', '3.12').split('.')[:2]
    take, leave = [], []
    for whl in sorted(wheels):
        name, version, py = wheel_tags(whl)
        if TORCH_FAMILY.search(name):
            leave.append((whl.name, "never installed: the machine's own torch stack stays"))
        elif name in have:
            leave.append((whl.name, f'the machine has {name} {have[name]}'.rstrip()))
        elif not any(t.startswith('py3') or t == f'cp{major}{minor}' for t in py.split('.')):
            leave.append((whl.name, f'built for {py}, the machine runs Python {major}.{minor}'))
        else:
            take.append(whl)
    return take, leave


def _pth_line(sites: List[str]) -> str:
    # A .pth line that starts with 'import' is executed: addsitedir also reads the .pth files
    # of those folders, as the machine's own interpreter does.
    return 'import site; ' + '; '.join(f'site.addsitedir({s!r})' for s in sites) + '\n'


def install(args: argparse.Namespace) -> int:
    """Install the carried wheels the machine lacks into a venv that sees the machine's packages.

    `python -m venv --system-site-packages` made from a venv's interpreter (the machine's
    python3 is one) sees the base interpreter's packages, not that venv's torch; and
    `pip install --target` keeps only the wheels' purelib/platlib, while the ROS 2 wheels ship
    their modules and libraries as data files (rclpy imports, rclpy.node does not). So: a
    plain venv, a .pth adding the machine's own site folders after its own, the wheels installed
    with --no-index --no-deps by that venv's interpreter, and LD_LIBRARY_PATH set here, in a
    fixed order, instead of by the wheels' bootstrap (which re-executes Python with it).
    """
    work, facts = Path(args.work), load_json(Path(args.work) / 'machine.json')
    wheels_dir = Path(args.wheels)
    wheels = sorted(wheels_dir.glob('*.whl')) if wheels_dir.is_dir() else []
    env_file = work / 'python_env.sh'
    env_file.write_text("# nothing installed: the machine's python as it is\n")
    result: Dict[str, Any] = {'wheels_dir': str(wheels_dir), 'carried': len(wheels),
                              'carried_mib': round(sum(w.stat().st_size for w in wheels)
                                                   / 2**20, 1)}
    if not wheels:
        say(f'install: no wheels in {wheels_dir}: nothing carried, nothing installed')
        return _save_install(args, facts, result)
    take, leave = install_plan(facts, wheels)
    result.update(installed=[w.name for w in take], left_out=dict(leave))
    say(f"install: {len(wheels)} wheels carried ({result['carried_mib']} MiB), {len(take)} to "
        f'install, {len(leave)} left out')
    for name, why in leave:
        say(f'  left out {name}: {why}')
    if not take:
        return _save_install(args, facts, result)
    venv = work / 'venv'
    vpy = venv / 'bin' / 'python3'
    pip = [str(vpy), '-m', 'pip', 'install', '--no-index', '--no-deps', '--no-compile',
           '--disable-pip-version-check', '-q', *map(str, take)]
    if args.dry_run:
        say(f'  would run: {sys.executable} -m venv --without-pip {venv}')
        say(f"  would write {venv}/lib/python{facts.get('python', '3')[:4]}/site-packages/"
            "_machine_site.pth adding the machine's site folders")
        say('  would run: ' + ' '.join(pip[:9] + [f'<{len(take)} wheels>']))
        result['status'] = 'dry run'
        facts['rclpy_carried'] = any(wheel_tags(w)[0] == 'ros-rclpy' for w in take)
        return _save_install(args, facts, result)
    try:
        shutil.rmtree(venv, ignore_errors=True)  # an earlier run's: start from nothing
        _run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], 120)
        vsite = subprocess.run([str(vpy), '-c', 'import sysconfig; '
                                'print(sysconfig.get_paths()["purelib"])'], text=True,
                               capture_output=True, check=True, timeout=60).stdout.strip()
        import site
        Path(vsite, '_machine_site.pth').write_text(_pth_line(site.getsitepackages()))
        _run(pip, 300)
        libs = [str(venv / 'lib')] + sorted(str(p) for p in Path(vsite).glob('ros_*.libs'))
        ld = ':'.join(libs + [p for p in os.environ.get('LD_LIBRARY_PATH', '').split(':') if p])
        env = dict(os.environ, LD_LIBRARY_PATH=ld, _ROS_WHEELS_BOOTSTRAP_COMPLETE='1')
        check = ('import importlib.util as u, rclpy.node, sensor_msgs.msg, lifecycle_msgs.msg; '
                 "print(u.find_spec('torch').origin)")
        there = subprocess.run([str(vpy), '-c', check], env=env, text=True,
                               capture_output=True, timeout=120)
        ours = importlib.util.find_spec('torch')
        if there.returncode != 0:
            raise RuntimeError((there.stderr.strip().splitlines() or ['exit'])[-1])
        if ours is None or Path(there.stdout.strip()).resolve() != Path(ours.origin).resolve():
            raise RuntimeError(f'the venv finds torch at {there.stdout.strip()}, '
                               f"not the machine's {ours.origin if ours else None}")
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        result['status'] = f'failed: {str(exc)[:300]}'
        say(f"install: failed ({result['status'][8:]}); running on the machine's python "
            'without the carried packages')
        return _save_install(args, facts, result)
    env_file.write_text(f'PY={shlex.quote(str(vpy))}\nexport LD_LIBRARY_PATH={shlex.quote(ld)}\n'
                        'export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1\n')
    result['status'] = 'installed'
    result['python'] = str(vpy)
    facts['rclpy_carried'] = any(wheel_tags(w)[0] == 'ros-rclpy' for w in take)
    say(f"install: {len(take)} wheels into {venv}; rclpy.node and sensor_msgs.msg import there, "
        f"torch is still the machine's ({ours.origin})")
    return _save_install(args, facts, result)


def _run(cmd: List[str], timeout: float) -> None:
    proc = subprocess.run(cmd, text=True, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ...: "
                           f"{(proc.stderr.strip().splitlines() or ['exit'])[-1]}")


def _save_install(args: argparse.Namespace, facts: Dict[str, Any],
                  result: Dict[str, Any]) -> int:
    save_json(Path(args.work) / 'machine.json', facts)
    rclpy = [n for n in result.get('installed', []) if wheel_tags(Path(n))[0] == 'ros-jazzy-rclpy']
    status = result.get('status', '')

    def change(r: Dict[str, Any]) -> None:
        r['install'] = result
        if rclpy and status in ('installed', 'dry run'):
            r['versions'] += f"; carried: ros-jazzy-rclpy {wheel_tags(Path(rclpy[0]))[1]}"
    update_json(Path(args.out) / 'run.json', change)
    return 0


# ------------------------------------------------------------------ the plan

@dataclass
class Settings:
    """What the steps measure; written by `plan`, read by every step."""

    models: List[str]
    sizes: List[List[int]]
    precisions: List[str]
    device: str = 'cuda'
    iters: int = 50
    warmup: int = 5
    dds_frames: int = 20
    naive_frames: int = 3
    budget_s: int = BUDGET_S
    dry_run: bool = False


@dataclass
class Step:
    """One step of the plan: its name (kind:model), estimate and what it measures."""

    name: str
    estimate_s: float
    what: str

    @property
    def kind(self) -> str:
        return self.name.split(':')[0]

    @property
    def model(self) -> str:
        return self.name.partition(':')[2]

    @property
    def limit_s(self) -> int:
        """The most this step may take: twice its estimate, never under a minute."""
        return int(max(60.0, 2 * self.estimate_s))


def skipped_backends(facts: Dict[str, Any]) -> Dict[str, str]:
    """Backends that cannot run on this machine, each with the one line that says why."""
    out = {}
    pk = facts['packages']
    if 'tensorrt' not in pk:
        out['tensorrt'] = ('not installed there, and its wheels are far too large to travel '
                           f'with the repository ({CARRY_LIMIT_MIB} MiB in all): no tensorrt rows')
    providers = facts.get('ort_providers')
    if providers is None and 'onnxruntime' not in pk and 'onnxruntime-gpu' not in pk:
        out['onnxruntime'] = 'not installed: no onnxruntime rows'
    elif 'CUDAExecutionProvider' not in (providers or []):
        ver = pk.get('onnxruntime') or pk.get('onnxruntime-gpu') or ''
        listed = ', '.join(providers or ['?'])
        out['onnxruntime'] = (f'onnxruntime {ver} has no CUDAExecutionProvider (providers: '
                              f'{listed}; onnxruntime-gpu, 255.6 MB, is too large to travel with '
                              'the repository): no onnxruntime rows, never timed through its '
                              'fallback to torch')
    return out


def make_plan(facts: Dict[str, Any], s: Settings, only: Optional[List[str]] = None
              ) -> Tuple[List[Step], List[Tuple[Step, str]]]:
    """Order the steps by value and keep those whose estimates fit the budget.

    Returns the steps to run and those left out, each with why.
    """
    def step(kind: str, model: str = '') -> Step:
        what = WHAT[kind].format(precisions='/'.join(s.precisions))
        return Step(f'{kind}:{model}' if model else kind,
                    ESTIMATE[kind](PARAMS_M.get(model, 1 if 'tiny' in model else 100)), what)

    first, rest = s.models[0], s.models[1:]
    # rclpy: imported by the env step (a real run), or from the wheels to install (dry run).
    ros = bool(facts.get('rclpy') or facts.get('rclpy_carried')
               or {'ros-jazzy-rclpy', 'ros-rclpy'} & set(facts['packages']))
    order = [step('env'), step('tests')] + [step('eager', m) for m in s.models]
    order += [step('compile', first)] + ([step('dds', first)] if ros else [])
    order += [step('compile', m) for m in rest] + [step('tests-compile')]
    order += [step(b, m) for b in ('tensorrt', 'onnxruntime') if b not in skipped_backends(facts)
              for m in s.models]
    order.append(step('naive', first))
    plan: List[Step] = []
    left: List[Tuple[Step, str]] = []
    if not ros:
        left.append((step('dds', first), 'no rclpy: carry the ROS 2 wheels (wheels/)'))
    room = s.budget_s - RESERVE_S - INSTALL_ESTIMATE_S
    for st in order:
        named = only is not None and (st.name in only or st.kind in only)
        if not (st.kind == 'env' or named or (only is None and st.kind not in ON_REQUEST)):
            left.append((st, 'only on request (--steps)' if st.kind in ON_REQUEST and only is None
                         else 'not among --steps'))
        elif sum(p.estimate_s for p in plan) + st.estimate_s > room:
            left.append((st, f'over the budget: needs ~{st.estimate_s:.0f} s more'))
        else:
            plan.append(st)
    return plan, left


def plan_cmd(args: argparse.Namespace) -> int:
    """Write the plan (WORK/plan.tsv, WORK/settings.json) and print it with its estimates."""
    work = Path(args.work)
    facts = load_json(work / 'machine.json')
    s = Settings(models=args.models, sizes=[list(map(int, z.split('x'))) for z in args.sizes],
                 precisions=args.precisions, device=args.device, iters=args.iters,
                 budget_s=args.budget, dry_run=args.dry_run)
    if s.device.startswith('cuda') and not facts.get('cuda_available'):
        say('plan: no CUDA GPU here (torch.cuda.is_available() is False): nothing to measure')
        update_json(Path(args.out) / 'run.json', lambda r: r.update(plan=[], left_out=[]))
        return 1
    only = args.steps.split(',') if args.steps else None
    plan, left = make_plan(facts, s, only)
    skipped = skipped_backends(facts)
    save_json(work / 'settings.json', asdict(s))
    (work / 'plan.tsv').write_text(f'#budget {s.budget_s} {RESERVE_S}\n' + ''.join(
        f'{p.name}\t{p.estimate_s:.0f}\t{p.limit_s}\n' for p in plan if p.kind != 'env'))
    total = sum(p.estimate_s for p in plan) + INSTALL_ESTIMATE_S
    say(f'plan: {len(plan)} steps, {total:.0f} s by estimate (install included) of a '
        f'{s.budget_s} s budget ({RESERVE_S} s kept for the report); models '
        f"{', '.join(s.models)}; sizes {', '.join(args.sizes)}; estimates for one H200, "
        'not yet measured there')
    for i, p in enumerate(plan, 1):
        say(f'  {i:2d}. {p.name:<26} ~{p.estimate_s:4.0f} s (limit {p.limit_s} s)  {p.what}')
    for b, why in skipped.items():
        say(f'  skip {b}: {why}')
    for p, why in left:
        say(f'  left out {p.name} (~{p.estimate_s:.0f} s): {why}')

    def put(r: Dict[str, Any]) -> None:
        r.update(plan=[asdict(p) for p in plan], budget_s=s.budget_s, estimate_s=total,
                 left_out=[{'name': p.name, 'estimate_s': p.estimate_s, 'why': why}
                           for p, why in left], skipped_backends=skipped, settings=asdict(s))
    update_json(Path(args.out) / 'run.json', put)
    return 0


# ------------------------------------------------------------------ files

def load_json(path: Path) -> Dict[str, Any]:
    """Return a JSON file's object, or {} when it is not there (yet)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def save_json(path: Path, obj: Dict[str, Any]) -> None:
    """Write JSON through a temporary file: a run killed mid-write leaves the old file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(_finite(obj), indent=1))
    os.replace(tmp, path)


def update_json(path: Path, change: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """Load, change in place, save; return the object."""
    obj = load_json(path)
    change(obj)
    save_json(path, obj)
    return obj


def _finite(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, 'item'):  # numpy scalars
        return _finite(obj.item())
    return obj


def bench_file(out: Path, model: str) -> Path:
    """Return the results file of one model."""
    return out / f'bench_{model}.json'


def row_key(size: str, backend: str, precision: str) -> str:
    """Return the key of one measured row: camera size, backend, precision."""
    return f'{size} {backend} {precision}'


# ------------------------------------------------------------------ the steps

@dataclass
class Ctx:
    """What a running step needs: settings, folders, and where its figures go."""

    s: Settings
    out: Path
    work: Path
    model: str = ''
    logs: List[str] = field(default_factory=list)

    def put(self, section: str, key: str, value: Dict[str, Any]) -> None:
        """Write one figure into the model's results file now."""
        def change(r: Dict[str, Any]) -> None:
            r.setdefault('model', self.model)
            r.setdefault(section, {})[key] = value
        update_json(bench_file(self.out, self.model), change)

    def log(self, msg: str) -> None:
        """Print a pipeline's log line and keep it (a fallback's line says why)."""
        self.logs.append(msg)
        say(f'  {msg}')

    @property
    def sizes(self) -> List[Tuple[int, int]]:
        return [(w, h) for w, h in self.s.sizes]

    @property
    def main_precision(self) -> str:
        return 'fp16' if self.s.device.startswith('cuda') else self.s.precisions[0]


def _checkpoint(ctx: Ctx) -> Path:
    from dpt_ros.tools.sample import random_checkpoint
    t = time.perf_counter()
    ckpt = random_checkpoint(ctx.model, ctx.work / 'ckpt')
    if time.perf_counter() - t > 0.5:
        say(f'{ctx.model}: random-weight checkpoint made in {time.perf_counter() - t:.1f} s')
    return ckpt


def _measure(ctx: Ctx, pipe: Any, w: int, h: int, iters: int, backend: str) -> Dict[str, Any]:
    """Start-up work, then the bare forward and the in-process pipeline of one camera size.

    A backend that fell back to eager torch, at start-up or on any later call, is not timed
    under its name: the row says it fell back and why.
    """
    from dpt_ros.tools.bench import BENCH_OUTPUTS, bench_forward, bench_stages
    from dpt_ros.core.outputs import FRAME_STAGES
    from dpt_ros.tools.sample import synthetic_scene
    s = synthetic_scene(w, h)
    t = time.perf_counter()
    pipe.prepare(h, w)  # autotune, compile and graph capture: not in the timings
    startup = time.perf_counter() - t
    if pipe.depth_model.backend == backend:
        no_pub = argparse.Namespace(ok=False)
        st = bench_stages(pipe, s.rgb, s.intrinsics, BENCH_OUTPUTS, iters, ctx.s.warmup, no_pub)
        fw = bench_forward(pipe, s.rgb, iters, ctx.s.warmup)
    if pipe.depth_model.backend != backend:
        why = next((ln for ln in reversed(ctx.logs) if 'failed' in ln or 'unavailable' in ln),
                   '')
        return {'status': 'fell back to eager torch: not timed', 'error': why[:300]}
    return {'status': 'measured', 'ran': backend, 'startup_s': startup, 'input': fw['input'],
            'forward': {k: fw[k] for k in ('p50', 'p95', 'mean', 'n')},
            'pipeline': st['pipeline'],
            'stages_p50': {k: st[k]['p50'] for k in FRAME_STAGES if k in st}}


def _said(ctx: Ctx, size: str, backend: str, prec: str, row: Dict[str, Any]) -> bool:
    """Write a row, print its summary line; return whether it was measured."""
    ctx.put('rows', row_key(size, backend, prec), row)
    name = f'{ctx.model} {size} {BACKEND_LABEL.get(backend, backend)} {prec}'
    if row['status'] != 'measured':
        say(f"{name}: {row['status']}{': ' + row['error'] if row.get('error') else ''}")
        return False
    say(f"{name}: forward p50 {row['forward']['p50']:.2f} ms (p95 {row['forward']['p95']:.2f}), "
        f"pipeline p50 {row['pipeline']['p50']:.2f} ms, {row['forward']['n']} frames, start-up "
        f"{row['startup_s']:.1f} s")
    return True


def _planned(ctx: Ctx, backends: List[str], precisions: List[str]) -> int:
    for w, h in ctx.sizes:
        for b in backends:
            for p in precisions:
                ctx.put('rows', row_key(f'{w}x{h}', b, p), {'status': 'planned'})
    return 0


def _failed(exc: BaseException) -> Dict[str, Any]:
    traceback.print_exc()
    return {'status': 'failed', 'error': f'{type(exc).__name__}: {exc}'.splitlines()[0][:300]}


def _rows(ctx: Ctx, backend: str, prec: str, iters: int,
          setup: Optional[Callable[[Any], None]] = None) -> int:
    """Load the model for one backend and precision, write a row per size; return failures."""
    from dpt_ros.tools.bench import make_pipeline
    bad, pipe = 0, None
    for w, h in ctx.sizes:
        try:
            if pipe is None:
                pipe, _ = make_pipeline(_checkpoint(ctx), ctx.s.device, prec,
                                        'compile' if backend.startswith('compile') else backend,
                                        log=ctx.log)
                if setup is not None:
                    setup(pipe)
            row = _measure(ctx, pipe, w, h, iters, backend.split('-')[0])
        except Exception as exc:  # noqa: B902 - the next size, precision or variant still runs
            row = _failed(exc)
        bad += not _said(ctx, f'{w}x{h}', backend, prec, row)
    if pipe is not None:
        if backend == 'torch' and prec == 'fp32' and ctx.s.device.startswith('cuda'):
            _cuda_flags(ctx, pipe, iters)
        pipe.close()
    return bad


def _cuda_flags(ctx: Ctx, pipe: Any, iters: int) -> None:
    from dpt_ros.tools.bench import bench_cuda_flags
    from dpt_ros.tools.sample import synthetic_scene
    w, h = ctx.sizes[0]
    flags = bench_cuda_flags(pipe, synthetic_scene(w, h).rgb, iters, ctx.s.warmup)
    ctx.put('cuda_flags', f'{w}x{h} fp32 bare forward p50 ms', flags)
    say(f'{ctx.model} fp32 bare forward p50 by setting: ' + '; '.join(
        f'{k}: {v:.2f} ms' for k, v in flags.items()))


def step_eager(ctx: Ctx) -> int:
    """Eager torch at each precision, every size; then the fp32 cuDNN / TF32 settings."""
    if ctx.s.dry_run:
        return _planned(ctx, ['torch'], ctx.s.precisions)
    import torch
    bad = 0
    for prec in ctx.s.precisions:
        if prec == 'bf16' and ctx.s.device.startswith('cuda') \
                and not torch.cuda.is_bf16_supported():
            for w, h in ctx.sizes:
                _said(ctx, f'{w}x{h}', 'torch', prec, {'status': 'skipped: no bf16 here'})
            continue
        iters = ctx.s.iters if prec == ctx.main_precision else max(2, ctx.s.iters * 3 // 5)
        bad += _rows(ctx, 'torch', prec, iters)
    return 1 if bad else 0


def compile_without_graphs(pipe: Any) -> None:
    """Make a compile pipeline run torch.compile's default mode: inductor, no CUDA graphs.

    model.backend compile runs reduce-overhead (CUDA graphs) on a GPU; the pipeline's backend
    runner still builds and keeps the module per input shape and treats any failure as the
    configured backend's: one line, then eager torch.
    """
    pipe.backends.options['cuda_graphs'] = False


def step_compile(ctx: Ctx) -> int:
    """torch.compile fp16 as model.backend compile runs it (CUDA graphs), then without graphs."""
    variants = {'compile': None, 'compile-nograph': compile_without_graphs}
    if ctx.s.dry_run:
        return _planned(ctx, list(variants), [ctx.main_precision])
    import torch
    bad = 0
    for label, setup in variants.items():
        bad += _rows(ctx, label, ctx.main_precision, ctx.s.iters, setup)
        torch._dynamo.reset()  # the next variant compiles afresh (kernel caches on disk stay)
    return 1 if bad else 0


def step_runtime(ctx: Ctx, backend: str) -> int:
    """Time an exported runtime (TensorRT, ONNX Runtime) alone in its process, per size."""
    if ctx.s.dry_run:
        return _planned(ctx, [backend], [ctx.main_precision])
    from dpt_ros.tools.bench import bench_backend
    _checkpoint(ctx)
    bad = 0
    for w, h in ctx.sizes:
        r = bench_backend(ctx.model, backend, ctx.work / 'ckpt', ctx.s.device,
                          ctx.main_precision, w, h, ctx.s.iters)
        row = {'status': 'measured', 'ran': backend, 'startup_s': r.get('warmup_s'),
               'forward': r.get('forward'), 'pipeline': r.get('pipeline')}
        if r['ran'] != backend:  # never timed under its name
            row = {'status': f"ran {r['ran']}: not timed", 'error': r.get('error', '')}
        bad += not _said(ctx, f'{w}x{h}', backend, ctx.main_precision, row)
    return 1 if bad else 0


def step_dds(ctx: Ctx) -> int:
    """Time publisher -> dpt_node -> subscriber processes over DDS (eager torch, first size)."""
    w, h = ctx.sizes[0]
    size, prec = f'{w}x{h}', ctx.main_precision
    if ctx.s.dry_run:
        ctx.put('dds', size, {'status': 'planned'})
        return 0
    from dpt_ros.tools.bench import depth_points_config
    from dpt_ros.tools.dds_clients import bench_dds, have_rclpy
    if not have_rclpy():
        say('dds: rclpy does not import here: no DDS end to end')
        ctx.put('dds', size, {'status': 'skipped: no rclpy'})
        return 0
    ckpt = _checkpoint(ctx)
    metric = load_json(ckpt / 'config.json').get('depth_estimation_type') == 'metric'
    ref = load_json(bench_file(ctx.out, ctx.model)).get('rows', {}).get(
        row_key(size, 'torch', prec), {})
    est = ref.get('pipeline', {}).get('p50') or 50.0
    try:
        d = bench_dds(ckpt, None, ctx.s.device, prec, w, h, ctx.s.dds_frames, est, say,
                      depth_points_config(metric), backend='torch', relay=True)
    except Exception as exc:  # noqa: B902
        ctx.put('dds', size, _failed(exc))
        return 1
    lat = d['latency']
    row = {'status': 'measured', 'backend': 'torch', 'precision': prec,
           'e2e': lat['latency'], 'received': lat['received'], 'sent': lat['sent'],
           'rate_hz': lat['rate_hz'], 'fps': d['throughput']['fps'],
           'fps_no_overlap': d.get('throughput_no_overlap', {}).get('fps'),
           'node_p50_ms': lat.get('node_p50_ms', {}),
           'relay_p50': d.get('relay', {}).get('latency', {}).get('p50')}
    fw = ref.get('forward', {}).get('p50')
    if fw:
        row['forward_p50'] = fw
        row['e2e_vs_forward'] = lat['latency']['p50'] / fw
    ctx.put('dds', size, row)
    say(f"{ctx.model} {size} DDS end to end ({prec}, torch): p50 {lat['latency']['p50']:.1f} ms "
        f"({lat['received']}/{lat['sent']}), sustained {row['fps']:.1f} frames/s"
        + (f", e2e / bare forward {row['e2e_vs_forward']:.2f}x" if fw else ''))
    return 0


def step_naive(ctx: Ctx) -> int:
    """Time the naive wrapper on the first size, a few frames (its point cloud is CPU work)."""
    w, h = ctx.sizes[0]
    if ctx.s.dry_run:
        ctx.put('naive', f'{w}x{h}', {'status': 'planned'})
        return 0
    import torch
    from dpt_ros.tools.bench import bench_naive
    from dpt_ros.tools.sample import synthetic_scene
    ckpt, s = _checkpoint(ctx), synthetic_scene(w, h)
    dtype = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(ctx.main_precision,
                                                                torch.float32)
    nv = bench_naive(ckpt, s.rgb, s.intrinsics, ctx.s.naive_frames, 1,
                     torch.device(ctx.s.device), dtype)
    row = {'status': 'measured', 'precision': ctx.main_precision,
           **{k: nv[k] for k in ('total', 'forward', 'overhead')}}
    ctx.put('naive', f'{w}x{h}', row)
    say(f"{ctx.model} {w}x{h} naive wrapper: total p50 {nv['total']['p50']:.0f} ms, of which "
        f"forward {nv['forward']['p50']:.1f} ms ({ctx.s.naive_frames} frames)")
    return 0


def gpu_test_files() -> List[str]:
    """Return the test files holding gpu-marked tests (the others need nothing of a GPU)."""
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / 'test').rglob('test_*.py')
                  if 'mark.gpu' in p.read_text())


def step_tests(ctx: Ctx, name: str) -> int:
    """Run the gpu-marked tests (the compile ones apart: they take longest), a line each."""
    facts = load_json(ctx.work / 'machine.json')
    cmd = [sys.executable, '-m', 'pytest', *gpu_test_files(), '-m', 'gpu', '-k',
           'compile' if name == 'tests-compile' else 'not compile', '-v', '-rfEs',
           '-p', 'no:cacheprovider']
    if facts.get('pytest_timeout') or 'pytest-timeout' in facts.get('packages', {}):
        cmd += ['--timeout', '150' if name == 'tests-compile' else '90']
    if ctx.s.dry_run:
        say('would run: ' + ' '.join(cmd[1:]))
        return 0
    rc = subprocess.call(cmd, cwd=ROOT)
    return 0 if rc in (0, 5) else rc  # 5: no test selected


def step_env(ctx: Ctx) -> int:
    """Record the GPU as found: name, memory, driver, clocks; matmul and copy ceilings."""
    facts = load_json(ctx.work / 'machine.json')
    if not ctx.s.dry_run:
        facts.update(_probe_gpu())
        save_json(ctx.work / 'machine.json', facts)
    gpu = {k: facts.get(k) for k in ('gpu', 'gpu_memory_gib', 'capability', 'sms', 'bf16',
                                     'torch', 'cuda', 'cudnn', 'driver', 'nvidia_smi',
                                     'bf16_matmul_tflops', 'copy_tb_s', 'ort_providers',
                                     'tensorrt', 'rclpy', 'cuda_available')}
    update_json(ctx.out / 'run.json', lambda r: r.update(machine=gpu))
    say('env: ' + ', '.join(f"{k} {', '.join(v) if isinstance(v, list) else v}"
                            for k, v in gpu.items() if v not in (None, '')))
    return 0


def _probe_gpu() -> Dict[str, Any]:
    import torch
    out: Dict[str, Any] = {'torch': torch.__version__, 'cuda': torch.version.cuda,
                           'cuda_available': torch.cuda.is_available()}
    # Each probe on its own: one that breaks must not hide the GPU from the plan.
    try:
        import onnxruntime
        out['ort_providers'] = onnxruntime.get_available_providers()
    except Exception:  # noqa: B902 - absent or broken: no onnxruntime rows either way
        out['ort_providers'] = None
    out['tensorrt'] = importlib.util.find_spec('tensorrt') is not None
    out['pytest_timeout'] = importlib.util.find_spec('pytest_timeout') is not None
    try:
        from dpt_ros.tools.dds_clients import have_rclpy
        out['rclpy'] = have_rclpy()
    except Exception:  # noqa: B902 - carried libraries that do not load: no DDS rows
        traceback.print_exc()
        out['rclpy'] = False
    try:
        out['nvidia_smi'] = subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version,clocks.sm,clocks.max.sm,clocks.mem,'
             'temperature.gpu,power.draw,utilization.gpu', '--format=csv'],
            capture_output=True, text=True, timeout=30).stdout.strip().replace('\n', ' | ')
    except (OSError, subprocess.SubprocessError) as exc:
        out['nvidia_smi'] = f'unavailable ({exc})'
    if not out['cuda_available']:
        return out
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
               capability=f'{p.major}.{p.minor}', sms=p.multi_processor_count,
               bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    try:
        out.update(_ceilings(torch))
    except Exception:  # noqa: B902 - the ceilings only help read the figures
        traceback.print_exc()
    return out


def _ceilings(torch: Any) -> Dict[str, float]:
    """bf16 8192^3 matmul TFLOP/s on random data and device copy TB/s (read + written)."""
    def timed(fn: Callable[[], Any], reps: int = 10) -> float:
        for _ in range(3):
            fn()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            fn()
        b.record()
        b.synchronize()
        return a.elapsed_time(b) / reps / 1e3
    n = 8192
    x = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    y = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    tflops = 2 * n ** 3 / timed(lambda: x @ y) / 1e12
    src = torch.rand(2 ** 29, device='cuda')  # 2 GiB of float32
    dst = torch.empty_like(src)
    tbs = 2 * src.numel() * 4 / timed(lambda: dst.copy_(src)) / 1e12
    return {'bf16_matmul_tflops': round(tflops, 1), 'copy_tb_s': round(tbs, 2)}


def run_step(args: argparse.Namespace) -> int:
    """Run one step of the plan in this process."""
    work, out = Path(args.work), Path(args.out)
    s = Settings(**load_json(work / 'settings.json')) if args.name != 'env' else \
        Settings(models=[], sizes=[], precisions=[], dry_run=args.dry_run)
    ctx = Ctx(s, out, work, args.name.partition(':')[2])
    kind = args.name.split(':')[0]
    if kind in ('tests', 'tests-compile'):
        return step_tests(ctx, kind)
    if kind in ('tensorrt', 'onnxruntime'):
        return step_runtime(ctx, kind)
    steps = {'env': step_env, 'eager': step_eager, 'compile': step_compile, 'dds': step_dds,
             'naive': step_naive}
    if kind not in steps:
        say(f"unknown step '{args.name}'")
        return 2
    return steps[kind](ctx)


# ------------------------------------------------------------------ records and the report

TEST_LABEL = {'tests': 'gpu', 'tests-compile': 'gpu compile'}
TEST_LINE = re.compile(r'^(\S+::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b')
# pytest -rfE's short summary: 'FAILED test/x.py::test_y - AssertionError: ...'
WHY_LINE = re.compile(r'^(?:FAILED|ERROR) (\S+::\S+)(?: - (.*))?$')


def test_counts(log: str) -> Dict[str, Any]:
    """Count test outcomes from pytest -v lines (kept even when pytest was killed mid-run)."""
    seen = {m.group(1): m.group(2) for m in map(TEST_LINE.match, log.splitlines()) if m}
    counts: Dict[str, Any] = {k: sum(1 for o in seen.values() if o == k.upper())
                              for k in ('passed', 'failed', 'skipped', 'error')}
    why = {m.group(1): (m.group(2) or '')[:300] for m in map(WHY_LINE.match, log.splitlines())
           if m}
    counts['problems'] = {t: why.get(t, '') for t, o in seen.items() if o in ('FAILED', 'ERROR')}
    return counts


def record(args: argparse.Namespace) -> int:
    """Fold a finished step (its code, time and log) into run.json and summary.md."""
    out = Path(args.out)
    log = Path(args.log).read_text(errors='replace') if args.log else ''
    status = {0: 'ok', 124: 'timed out', 137: 'killed'}.get(args.rc, f'failed (exit {args.rc})')
    if args.skipped:
        status = f'skipped: {args.skipped}'
    entry = {'estimate_s': args.estimate, 'took_s': args.took, 'rc': args.rc, 'status': status,
             'log_tail': log[-4000:]}
    if args.dry_run and not args.skipped and args.rc == 0:
        entry['status'] = 'dry run'

    def change(r: Dict[str, Any]) -> None:
        r.setdefault('steps', {})[args.name] = entry
        if args.name.startswith('tests') and not args.skipped and not args.dry_run:
            r.setdefault('tests', {})[args.name] = test_counts(log)
    run = update_json(out / 'run.json', change)
    (out / 'summary.md').write_text(summary_md(out, run))
    return 0


def _report_rows(out: Path, run: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Every row to report, in plan order: model, size, backend, precision."""
    models = run.get('settings', {}).get('models') or []
    models += sorted(p.name[6:-5] for p in out.glob('bench_*.json') if p.name[6:-5] not in models)
    rows = []
    for m in models:
        res = load_json(bench_file(out, m))
        found = res.get('rows', {})
        keys = sorted(found, key=lambda k: (
            [int(v) for v in k.split()[0].split('x')][::-1],
            BACKEND_ORDER.index(k.split()[1]) if k.split()[1] in BACKEND_ORDER else 9,
            PRECISIONS.index(k.split()[2]) if k.split()[2] in PRECISIONS else 9))
        for k in keys:
            size, backend, prec = k.split()
            r = dict(found[k], model=m, size=size, backend=backend, precision=prec)
            dds = res.get('dds', {}).get(size, {})
            if backend == 'torch' and prec == dds.get('precision') and 'e2e' in dds:
                r['e2e'], r['e2e_vs_forward'] = dds['e2e']['p50'], dds.get('e2e_vs_forward')
            rows.append(r)
    return rows


def _fmt(v: Optional[float], digits: int = 2) -> str:
    return '-' if v is None else f'{v:.{digits}f}'


def table_lines(out: Path, run: Dict[str, Any], markdown: bool = False) -> List[str]:
    """Return the compact closing table: rows of figures, then tests, skips, steps left out."""
    head = ['model', 'size', 'backend', 'prec', 'forward p50 ms', 'pipeline p50 ms',
            'e2e p50 ms', 'e2e/fwd', 'note']
    body = []
    for r in _report_rows(out, run):
        ok = r.get('status') == 'measured'
        body.append([r['model'], r['size'], BACKEND_LABEL.get(r['backend'], r['backend']),
                     r['precision'], _fmt(r['forward']['p50']) if ok else '-',
                     _fmt(r['pipeline']['p50']) if ok else '-', _fmt(r.get('e2e'), 1),
                     _fmt(r.get('e2e_vs_forward')), '' if ok else r.get('status', '')[:40]])
    if markdown:
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        lines += ['| ' + ' | '.join(c) + ' |' for c in body]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ['  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                 for row in [head] + body]
    tests = run.get('tests', {})
    if tests:
        lines.append('tests: ' + '; '.join(
            f"{TEST_LABEL.get(n, n)} {t['passed']} passed, {t['failed'] + t['error']} failed, "
            f"{t['skipped']} skipped" for n, t in tests.items()))
        for n, t in tests.items():
            lines += [f'  FAILED {k}: {why}'[:200] for k, why in t.get('problems', {}).items()]
    for b, why in run.get('skipped_backends', {}).items():
        lines.append(f'skipped {b}: {why}')
    steps = run.get('steps', {})
    not_ok = [f"{n} ({s['status']})" for n, s in steps.items()
              if s['status'] not in ('ok', 'dry run')]
    if not_ok:
        lines.append('steps not ok: ' + ', '.join(not_ok))
    if run.get('left_out'):
        lines.append('left out: ' + ', '.join(f"{x['name']} ({x['why']})"
                                              for x in run['left_out']))
    return lines


def summary_md(out: Path, run: Dict[str, Any]) -> str:
    """Return the run as markdown: versions, figures, steps (estimate, time), failing logs."""
    m = run.get('machine', {})
    lines = [f"# GPU check: {m.get('gpu') or 'no GPU'}", '',
             f"{run.get('versions', '')}", '',
             f"Budget {run.get('budget_s', '?')} s, plan {_fmt(run.get('estimate_s'), 0)} s by "
             f"estimate. Ceilings: bf16 matmul {m.get('bf16_matmul_tflops') or '-'} TFLOP/s, "
             f"device copy {m.get('copy_tb_s') or '-'} TB/s. nvidia-smi: "
             f"{m.get('nvidia_smi') or '-'}", '', '## Figures (ms)', '']
    lines += table_lines(out, run, markdown=True)
    lines += ['', '## Steps', '', '| step | estimate s | took s | status |', '|---|---|---|---|']
    for n, s in run.get('steps', {}).items():
        lines.append(f"| {n} | {_fmt(s['estimate_s'], 0)} | {_fmt(s['took_s'], 0)} | "
                     f"{s['status']} |")
    inst = run.get('install', {})
    if inst:
        lines += ['', f"Carried wheels: {inst.get('carried', 0)} ({inst.get('carried_mib', 0)} "
                  f"MiB), {len(inst.get('installed', []))} installed; "
                  f"{inst.get('status', 'nothing to install')}."]
    for n, s in run.get('steps', {}).items():
        if s['status'] not in ('ok', 'dry run') and not s['status'].startswith('skipped') \
                and s.get('log_tail'):
            lines += ['', f'### {n}: {s["status"]}, end of its log', '', '```',
                      s['log_tail'][-2500:].rstrip(), '```']
    return '\n'.join(lines) + '\n'


def table_cmd(args: argparse.Namespace) -> int:
    """Write summary.md and print the closing table (the last thing a run prints)."""
    out = Path(args.out)
    for tmp in out.glob('*.tmp'):  # a step stopped while writing: its last whole file stays
        tmp.unlink()
    run = load_json(out / 'run.json')
    (out / 'summary.md').write_text(summary_md(out, run))
    m = run.get('machine', {})
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob('*') if p.is_file())
    say(f"files in {out}: {', '.join(files)}")
    say('')
    say(f"== GPU check: {m.get('gpu') or 'no GPU'} | {run.get('versions', '')}")
    for line in table_lines(out, run):
        say(line)
    return 0


def versions_cmd(args: argparse.Namespace) -> int:
    """Print which versions run (the run's first line) and start run.json and machine.json."""
    work, out = Path(args.work), Path(args.out)
    facts = machine_facts(args)
    line = versions_line(facts)
    say(f"versions: {line}{' (from ' + args.machine + ')' if args.machine else ''}")
    core = (ROOT / 'requirements' / 'core.txt').read_text()
    pin = re.search(r'^torch==(\S+)', core, re.M)
    if pin:
        say(f"versions: the repository's CI pins torch {pin.group(1)}; this run uses the "
            "machine's torch and never installs one")
    missing = [n for n in CORE if norm(n) not in facts['packages']]
    save_json(work / 'machine.json', facts)
    started = time.strftime('%FT%TZ', time.gmtime())
    save_json(out / 'run.json', {'versions': line, 'started': started})
    if missing:
        say(f"versions: missing here: {', '.join(missing)}; carry them as wheels (README, GPU)")
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point (python -m dpt_ros.tools.gpu_check CMD ...); scripts/gpu_check.sh drives it."""
    ap = argparse.ArgumentParser(prog='gpu_check', description=__doc__.split('\n')[0])
    ap.add_argument('--out', default=os.environ.get('OUT', str(ROOT / 'gpu_check_out')))
    ap.add_argument('--work', default=os.environ.get('GPU_CHECK_WORK', '/tmp/dpt_gpu_check'))
    ap.add_argument('--machine', default='', help='a machine description (dry run)')
    ap.add_argument('--dry-run', action='store_true')
    sub = ap.add_subparsers(dest='cmd', required=True)
    sub.add_parser('versions')
    p = sub.add_parser('install')
    p.add_argument('--wheels', default=str(ROOT / 'wheels'))
    p = sub.add_parser('plan')
    p.add_argument('--budget', type=int, default=BUDGET_S)
    p.add_argument('--models', nargs='+', default=list(MODELS))
    p.add_argument('--sizes', nargs='+', default=[f'{w}x{h}' for w, h in SIZES])
    p.add_argument('--precisions', nargs='+', default=list(PRECISIONS),
                   choices=('fp16', 'bf16', 'fp32'))
    p.add_argument('--device', default='cuda')
    p.add_argument('--iters', type=int, default=50)
    p.add_argument('--steps', default='', help='comma-separated step names or kinds')
    p = sub.add_parser('step')
    p.add_argument('name')
    p = sub.add_parser('record')
    p.add_argument('name')
    p.add_argument('--rc', type=int, default=0)
    p.add_argument('--took', type=float, default=0.0)
    p.add_argument('--estimate', type=float, default=0.0)
    p.add_argument('--log', default='')
    p.add_argument('--skipped', default='')
    sub.add_parser('table')
    args = ap.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    cmds = {'versions': versions_cmd, 'install': install, 'plan': plan_cmd, 'step': run_step,
            'record': record, 'table': table_cmd}
    return cmds[args.cmd](args)


if __name__ == '__main__':
    sys.exit(main())
