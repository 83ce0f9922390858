# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""A new user's first run: the shipped config gives metres, RViz shows them, offline is clear.

The node runs as the README's "On a robot" launch command starts it (namespace and remaps from
that command, config/dpt.yaml), with a tiny random checkpoint of the default's family and type
in place of the real weights, which cannot be downloaded here.
"""

import os
from pathlib import Path
import re
import subprocess
import sys
import time

import pytest
import yaml

from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.params import read_params_file
from dpt_ros.tools.checkpoints import DEFAULT
from dpt_ros.tools.sample import make_random_checkpoint, synthetic_scene

from rosutil import Harness, header, NodeProcess, ROOT, stamp_of  # noqa: I100

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_check_compatible,  # noqa: E402, I100
                       QoSCompatibility, QoSProfile, ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

RVIZ = ROOT / 'config' / 'dpt.rviz'
SHIPPED = ROOT / 'config' / 'dpt.yaml'
# RViz display class -> the message type its Topic must carry.
DISPLAY_TYPES = {'rviz_default_plugins/PointCloud2': conv.CLOUD_TYPE,
                 'rviz_default_plugins/Image': conv.IMAGE_TYPE,
                 'rviz_default_plugins/Camera': conv.IMAGE_TYPE,
                 'rviz_default_plugins/DepthCloud': conv.IMAGE_TYPE}
# What a metric checkpoint with camera_info must give: metres, their calibration, the cloud.
METRIC_OUTPUTS = tuple(outputs.BY_NAME[n] for n in ('depth', 'depth_info', 'points'))
RVIZ_QOS = {'Reliable': ReliabilityPolicy.RELIABLE, 'Best Effort': ReliabilityPolicy.BEST_EFFORT,
            'Volatile': DurabilityPolicy.VOLATILE,
            'Transient Local': DurabilityPolicy.TRANSIENT_LOCAL,
            'Keep Last': HistoryPolicy.KEEP_LAST, 'Keep All': HistoryPolicy.KEEP_ALL}


def documented_launch():
    """Return the namespace and remaps of the README's "On a robot" `ros2 launch` command."""
    text = (ROOT / 'README.md').read_text()
    section = text[text.index('## On a robot'):]
    start = section.index('ros2 launch dpt_ros dpt.launch.py')
    command = []
    for line in section[start:].splitlines():
        command.append(line.split('#')[0].rstrip(' \\'))
        if not line.rstrip().endswith('\\'):
            break
    args = dict(re.findall(r'(\w+):=(\S+)', ' '.join(command)))
    assert {'namespace', 'image', 'camera_info'} <= set(args), command
    return args


def optical_frame(image_topic):
    """Return the frame a driver stamps on an image topic (/camera/color/x -> camera_color_...)."""
    return '_'.join(image_topic.strip('/').split('/')[:-1]) + '_optical_frame'


def rviz_config():
    """Return (Fixed Frame, [(name, class, topic, qos, enabled)], other frames) of dpt.rviz."""
    doc = yaml.safe_load(RVIZ.read_text())
    manager = doc['Visualization Manager']
    displays, frames = [], []

    def walk(items):
        for d in items:
            walk(d.get('Displays', []))
            for key in ('Reference Frame', 'Target Frame'):
                if key in d and d[key] != '<Fixed Frame>':
                    frames.append(d[key])
            topic = d.get('Topic')
            if isinstance(topic, dict):
                qos = QoSProfile(depth=int(topic['Depth']),
                                 history=RVIZ_QOS[topic['History Policy']],
                                 reliability=RVIZ_QOS[topic['Reliability Policy']],
                                 durability=RVIZ_QOS[topic['Durability Policy']])
                displays.append((d['Name'], d['Class'], topic['Value'], qos,
                                 bool(d.get('Enabled', True))))
    walk(manager['Displays'])
    view = manager.get('Views', {}).get('Current', {})
    if view.get('Target Frame', '<Fixed Frame>') != '<Fixed Frame>':
        frames.append(view['Target Frame'])
    return manager['Global Options']['Fixed Frame'], displays, frames


def expected_topics(args):
    """Map topic -> type: what the node publishes under the namespace, and its inputs."""
    out = {f"{args['namespace'].rstrip('/')}/{o.topic}": o.msg_type for o in outputs.OUTPUTS}
    out[args['image']] = conv.IMAGE_TYPE
    out[args['camera_info']] = conv.INFO_TYPE
    return out


def test_rviz_topics_and_frames_are_the_documented_launch():
    args = documented_launch()
    topics = expected_topics(args)
    fixed, displays, frames = rviz_config()
    assert displays, 'no display with a topic in dpt.rviz'
    for name, cls, topic, _, _ in displays:
        assert cls in DISPLAY_TYPES, f'{name}: display class {cls} is not checked here'
        assert topic in topics, f'{name}: {topic} is neither published nor a documented input'
        assert topics[topic] == DISPLAY_TYPES[cls], f'{name}: {topic} is {topics[topic]}'
    # Outputs carry the camera image's frame and the node publishes no TF: RViz shows them
    # without any transform only in that frame.
    assert fixed == optical_frame(args['image'])
    assert all(f == fixed for f in frames), frames


@pytest.fixture(scope='module')
def default_family_checkpoint(tmp_path_factory):
    """Write a tiny random checkpoint of the default's family and type (metric, max_depth)."""
    from transformers import AutoConfig
    path = make_random_checkpoint(tmp_path_factory.mktemp('default') / 'ckpt',
                                  'tiny-depth-anything', overrides=DEFAULT.config_overrides())
    cfg = AutoConfig.from_pretrained(str(path))
    assert cfg.model_type == DEFAULT.family
    assert (cfg.depth_estimation_type, cfg.max_depth) == ('metric', DEFAULT.max_depth)
    return path


@pytest.fixture(scope='module')
def first_run(default_family_checkpoint):
    """Run the shipped config as documented; record what RViz's displays would receive."""
    args = documented_launch()
    assert read_params_file(SHIPPED)['model.depth'] == DEFAULT.hub_id
    node = NodeProcess(['--params-file', str(SHIPPED),
                        '-p', f'model.depth:={default_family_checkpoint}',
                        '-r', f"__ns:={args['namespace']}", '-r', f"image:={args['image']}",
                        '-r', f"camera_info:={args['camera_info']}"])
    h = Harness().start()
    ns = args['namespace'].rstrip('/')
    fixed, displays, _ = rviz_config()
    classes = {conv.IMAGE_TYPE: Image, conv.CLOUD_TYPE: PointCloud2, conv.INFO_TYPE: CameraInfo}
    try:
        for _, cls, topic, qos, enabled in displays:
            if enabled and topic != args['image']:
                h.record(topic, classes[DISPLAY_TYPES[cls]], qos)
        for o in METRIC_OUTPUTS:
            h.record(f'{ns}/{o.topic}', classes[o.msg_type])
        img = h.node.create_publisher(Image, args['image'], 5)
        info = h.node.create_publisher(CameraInfo, args['camera_info'], 5)
        assert h.wait_subscribed(img, 90), node.text()
        s = synthetic_scene(320, 240)
        wanted = [topic for _, _, topic, _, on in displays if on and topic != args['image']]
        wanted += [f'{ns}/{o.topic}' for o in METRIC_OUTPUTS]
        for i in range(20):
            hdr = header(i, frame_id=fixed)
            info.publish(conv.camera_info_from_intrinsics(s.intrinsics, hdr))
            time.sleep(0.05)
            img.publish(conv.image_msg(hdr, s.rgb, 'rgb8'))
            if h.wait(lambda: all(h.get(t) for t in wanted), 3):
                break
        pubs_qos = {t: [e.qos_profile for e in h.node.get_publishers_info_by_topic(t)]
                    for t in wanted}
        yield {'h': h, 'ns': ns, 'displays': displays, 'fixed': fixed, 'node': node,
               'pubs_qos': pubs_qos, 'wanted': wanted, 'image': args['image']}
    finally:
        rc = node.stop()
        h.close()
    assert rc == 0, node.text()


def test_shipped_config_publishes_metric_depth_and_points(first_run):
    h, ns, node = first_run['h'], first_run['ns'], first_run['node']
    for o in METRIC_OUTPUTS:
        assert h.get(f'{ns}/{o.topic}'), f'nothing on {ns}/{o.topic}\n{node.text()}'
    # A frame whose depth image and cloud both arrived (a display's best-effort subscription
    # may miss a large sample on a loaded machine; each frame's are published together).
    depth_topic = f"{ns}/{outputs.BY_NAME['depth'].topic}"
    points = f"{ns}/{outputs.BY_NAME['points'].topic}"
    both = sorted({stamp_of(m) for m in h.get(depth_topic)} & {stamp_of(m) for m in h.get(points)})
    assert both, node.text()
    depth_msg = next(m for m in h.get(depth_topic) if stamp_of(m) == both[-1])
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ('32FC1', 240, 320)
    depth = conv.image_to_array(depth_msg)
    valid = depth[depth == depth]
    assert valid.size > 0.5 * depth.size
    assert valid.min() > 0 and valid.max() <= DEFAULT.max_depth
    cloud = next(m for m in h.get(points) if stamp_of(m) == both[-1])
    assert (cloud.height, cloud.width) == (240, 320)


def test_rviz_displays_receive_the_outputs_with_their_own_qos(first_run):
    h, fixed = first_run['h'], first_run['fixed']
    for topic in first_run['wanted']:
        msgs = h.get(topic)
        assert msgs, f'RViz would show nothing on {topic}\n{first_run["node"].text()}'
        assert all(m.header.frame_id == fixed for m in msgs), topic
    for name, _, topic, qos, enabled in first_run['displays']:
        if not enabled or topic == first_run['image']:
            continue
        offered = first_run['pubs_qos'][topic]
        assert offered, f'{name}: no publisher on {topic}'
        for pub in offered:
            # RViz leaves the policies its panel does not show (liveliness, deadline) at the
            # system default, which the check can only report as a warning.
            ok, why = qos_check_compatible(pub, qos)
            assert ok != QoSCompatibility.ERROR, f'{name} ({topic}): {why}'
            assert ok == QoSCompatibility.OK or 'system_default' in why, why


def _run_python(code, **env):
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, **env))


def test_shipped_config_offline_says_how_to_fetch_the_weights(tmp_path):
    node = NodeProcess(['--params-file', str(SHIPPED)],
                       env={'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path / 'empty')})
    rc = node.wait_exit(120)
    errors = [ln for ln in node.err if 'error' in ln.lower() or 'Traceback' in ln]
    assert rc == 2, node.text()
    assert len(errors) == 1 and errors[0].startswith('dpt_node: error: '), node.text()
    err = errors[0]
    assert DEFAULT.hub_id in err and 'HF_HUB_OFFLINE' in err
    assert f'hf download {DEFAULT.hub_id} --local-dir' in err
    assert 'No model.depth was given' not in err  # the shipped file names it


def test_a_params_file_for_another_node_name_is_pointed_at(tmp_path):
    """Settings under a key that is not the node's are not applied: the error says where."""
    wrong = tmp_path / 'p.yaml'
    wrong.write_text(yaml.safe_dump({'dpt_node': {'ros__parameters': {
        'model': {'depth': str(tmp_path / 'mine'), 'device': 'cpu'}}}}))
    node = NodeProcess(['--params-file', str(wrong)],
                       env={'HF_HUB_OFFLINE': '1', 'HF_HUB_CACHE': str(tmp_path / 'empty')})
    assert node.wait_exit(120) == 2, node.text()
    err = next(ln for ln in node.err if ln.startswith('dpt_node: error: '))
    assert f'No model.depth was given, so the default {DEFAULT.hub_id} was tried' in err
    assert "top-level key is this node (/dpt, or its name 'dpt') or '/**'" in err


def test_a_hub_id_in_the_hf_cache_loads_offline(tmp_path, default_family_checkpoint):
    # `hf download ID` (no --local-dir) fills the cache; HF_HUB_OFFLINE=1 must then load it.
    rev = '0' * 40
    repo = tmp_path / 'cache' / 'models--acme--tiny-metric'
    snap = repo / 'snapshots' / rev
    snap.mkdir(parents=True)
    for f in Path(default_family_checkpoint).iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(rev)
    code = ('from dpt_ros.core.models import load_model; '
            'from dpt_ros.core.config import ModelConfig; '
            "m = load_model('acme/tiny-metric', 'depth', ModelConfig(device='cpu'), print); "
            "print('LOADED', m.model_type, m.metric)")
    out = _run_python(code, HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path / 'cache'))
    assert 'LOADED depth_anything True' in out.stdout, out.stdout + out.stderr
