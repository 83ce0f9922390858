# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The core imports and runs with rclpy (and every ROS package) absent."""

import subprocess
import sys

SCRIPT = r"""
import importlib.abc, sys
BLOCK = ('rclpy', 'sensor_msgs', 'std_msgs', 'rcl_interfaces', 'diagnostic_msgs',
         'builtin_interfaces', 'launch', 'launch_ros', 'cv_bridge')
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCK:
            raise ImportError(f'{name} blocked for this test')
sys.meta_path.insert(0, Block())
import pkgutil, dpt_ros
mods = [m.name for m in pkgutil.iter_modules(dpt_ros.__path__) if m.name != 'node']
for m in mods:
    __import__('dpt_ros.' + m)
from dpt_ros.config import Config
from dpt_ros.conversions import Frame
from dpt_ros.outputs import encode, EncodeOptions
from dpt_ros.pipeline import Pipeline
from dpt_ros.sample import synthetic_scene
s = synthetic_scene(64, 48)
cfg = Config().replace({'model.depth': sys.argv[1], 'model.device': 'cpu'})
r = Pipeline(cfg, log=lambda m: None).process(Frame(s.rgb, 'rgb8'), s.intrinsics)
encoded = [o.name for o, _ in encode(r, EncodeOptions('32FC1', True))]
assert 'points' in r.arrays and 'points' in encoded and 'depth_info' in encoded
try:
    import dpt_ros.node
except ImportError:
    pass
else:
    raise SystemExit('dpt_ros.node imported without rclpy?')
print('OK', len(mods))
"""


def test_core_runs_without_ros(tiny_metric):
    proc = subprocess.run([sys.executable, '-c', SCRIPT, str(tiny_metric)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith('OK')
    assert int(proc.stdout.split()[1]) >= 9  # config ... sample, demo, toolkit: all imported
