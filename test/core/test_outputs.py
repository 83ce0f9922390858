# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""The output table: each row says how its output is computed, so a new output is one row."""

import numpy as np

from dpt_ros.core import conversions as conv
from dpt_ros.core import outputs
from dpt_ros.core.config import Config
from dpt_ros.core.conversions import Frame, IMAGE_TYPE
from dpt_ros.core.outputs import DEPTH_TASK, EncodeOptions, GEOMETRY, Output, STAGES
from dpt_ros.core.pipeline import Pipeline
from dpt_ros.tools.sample import synthetic_scene


def _float_image(arr, _result, _opts):
    return conv.image_fields(arr, '32FC1')


HALF = Output('depth_half', 'depth/half', IMAGE_TYPE, DEPTH_TASK, _float_image, 'Image 32FC1',
              'half the metric depth', lambda f: None if f.metres is None else f.metres / 2)
# A later stage, reading the flip confidence: the pipeline must run the flip for it alone.
SURE = Output('depth_sure', 'depth/sure', IMAGE_TYPE, DEPTH_TASK, _float_image, 'Image 32FC1',
              'metres where the mirrored frame agrees',
              lambda f: f.metres.masked_fill(f.confidence < 0.5, float('nan')), GEOMETRY,
              runs_model=lambda cfg: cfg.depth.confidence == 'flip',
              reads_confidence=outputs.always)


def test_a_new_output_is_one_row(tiny_metric, monkeypatch):
    """Rows added to a copy of the table are computed, encoded and listed; no pipeline change."""
    monkeypatch.setattr(outputs, 'OUTPUTS', outputs.OUTPUTS + (HALF, SURE))
    assert {'depth_half', 'depth_sure'} <= outputs.names(viewers=False)
    assert '| `depth/half` | Image 32FC1 | half the metric depth |' in outputs.markdown_rows()
    s = synthetic_scene(96, 72)
    pipe = Pipeline(Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu',
                                      'depth.confidence': 'flip'}), log=lambda m: None)
    r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, outputs.names())
    depth = r.arrays['depth']
    assert np.isfinite(depth).mean() > 0.5
    np.testing.assert_array_equal(r.arrays['depth_half'], depth / 2)
    sure = r.arrays['depth_sure']
    agrees = r.arrays['confidence'] >= 0.5
    assert 0 < agrees.mean() and np.array_equal(np.isfinite(sure), np.isfinite(depth) & agrees)
    encoded = {o.name: f for o, f in outputs.encode(r, EncodeOptions('32FC1', True))}
    assert encoded['depth_half']['encoding'] == '32FC1'
    assert bytes(encoded['depth_half']['data']) == (depth / 2).astype(np.float32).tobytes()
    assert set(r.timings) == set(STAGES)
    # Asked alone, each is all the pipeline computes; the flip still rides along for SURE.
    alone = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, {'depth_sure'})
    assert set(alone.arrays) == {'depth_sure'}
    np.testing.assert_array_equal(alone.arrays['depth_sure'], sure)
    off = pipe.config.replace({'depth.confidence': 'off'})
    pipe.update(off)
    assert pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, {'depth_sure'}).arrays == {}


def test_rows_name_only_known_stages_and_every_array_has_a_computation():
    for o in outputs.OUTPUTS:
        assert o.stage in STAGES, o.name
        assert (o.compute is None) == bool(o.array), o.name  # computed, or another row's array
        assert o.source in outputs.BY_NAME and outputs.BY_NAME[o.source].compute is not None


def test_every_wanted_output_the_result_lacks_gets_its_reason(tiny_metric):
    """Unpublished names what a frame left out; why_unpublished says why, setting or frame.

    Through the pipeline: a metric checkpoint under depth.mode relative_inverse with the
    confidence off and no camera_info; then the same frame under a metric mode.
    """
    s = synthetic_scene(64, 48)
    want = outputs.names(viewers=False, tasks=(DEPTH_TASK,)) - {'points', 'normals'}
    cfg = Config().replace({'model.depth': str(tiny_metric), 'model.device': 'cpu',
                            'depth.mode': 'relative_inverse'})
    pipe = Pipeline(cfg, log=lambda m: None)
    r = pipe.process(Frame(s.rgb, 'rgb8'), None, want)
    missing = outputs.unpublished(r, want, camera_info=False)
    assert missing == ['confidence', 'depth', 'depth_info']
    why = {n: outputs.why_unpublished(n, r, cfg, False, 'depth') for n in missing}
    assert why['confidence'] == ("depth.confidence is 'off' ('flip' computes it)", True)
    assert why['depth_info'] == ('no camera_info', False)
    assert why['depth'][1] and why['depth'][0].startswith(
        "no metres under depth.mode 'relative_inverse'")
    metric = cfg.replace({'depth.mode': 'metric', 'depth.confidence': 'flip'})
    pipe.update(metric)
    r = pipe.process(Frame(s.rgb, 'rgb8'), s.intrinsics, want)
    assert outputs.unpublished(r, want, camera_info=True) == ['relative']
    assert outputs.why_unpublished('relative', r, metric, True, 'depth') == (
        "the checkpoint is metric: its depth is depth/image (depth.mode 'relative_inverse' "
        'publishes 1 / metres here)', True)
    assert outputs.unpublished(r, want - {'relative'}, camera_info=False) == ['depth_info']
    # A fitted frame without metres passes with the frame: no setting to blame.
    fitted = type(r)(r.height, r.width, mode='fitted')
    assert outputs.why_unpublished('points', fitted, cfg, True, 'depth') == \
        ('no metres this frame (fit_state)', False)
