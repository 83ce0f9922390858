# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""/diagnostics (dpt_ros.ros.diagnostics): what the node writes is what the tools read back."""

from types import SimpleNamespace

import pytest

from dpt_ros.core.outputs import FRAME_STAGES

DiagnosticStatus = pytest.importorskip(
    'diagnostic_msgs.msg', reason='diagnostic_msgs (ROS 2) is absent').DiagnosticStatus
pytest.importorskip('rclpy', reason='rclpy (ROS 2) is absent')

from dpt_ros.ros import diagnostics as diag  # noqa: E402 - after the ROS 2 checks


class Node:
    """The two things Diagnostics asks its node."""

    def get_fully_qualified_name(self):
        return '/robot/dpt'


def camera(name, received=0, processed=0):
    stats = diag.Stats()
    stats.received, stats.processed = received, processed
    return camera_of(stats, name)


def camera_of(stats, name=''):
    return SimpleNamespace(name=name, image_topic=f'/robot/{name}/image', stats=stats,
                           anchors=None, anchor_topics=(), notes={})


def timings(ms):
    return {s: ms for s in FRAME_STAGES}


def test_statuses_read_back_by_camera_and_stage():
    d = diag.Diagnostics(Node())
    front, rear = camera('front', 10, 9), camera('rear', 4, 0)
    for ms in (1.0, 2.0, 4.0):
        d.stages.add_timings(timings(ms), 3 * ms, 1.0)
        front.stats.add_timings(timings(ms), 3 * ms, 1.0)
    d.count_batch(2)
    d.count_batch(1)
    pipe = SimpleNamespace(describe=lambda: {'device': 'cpu', 'depth_mode': 'metric'},
                           forwards=3, backend_builds={'onnxruntime': 2}, builds_after_prepare=0)
    front.notes['focal_source'] = 'camera_info'  # the newest frame's facts, per camera
    statuses = d.statuses([front, rear], True, pipe)
    assert [s.name for s in statuses] == ['dpt_ros: /robot/dpt',
                                          'dpt_ros: /robot/dpt camera front',
                                          'dpt_ros: /robot/dpt camera rear']
    node = diag.values_of(statuses)
    assert diag.stage_p50(node) == dict.fromkeys(FRAME_STAGES, 2.0)
    assert (node['batches'], node['mean_batch_size'], node['max_batch_size']) == ('2', '1.50', '2')
    assert node['cameras'] == 'front, rear' and node['device'] == 'cpu'
    assert node['forwards'] == '3'  # network forwards, beside the batches
    assert (node['backend_builds'], node['backend_builds_after_activation']) == \
        ('onnxruntime 2', '0')
    assert diag.builds_count(node['backend_builds']) == 2 and diag.builds_count('0') == 0
    cams = diag.camera_values(statuses)
    assert sorted(cams) == ['front', 'rear'] and cams['front'] == diag.values_of(statuses,
                                                                                 'front')
    assert cams['front']['input_topic'] == '/robot/front/image'
    assert cams['front']['focal_source'] == 'camera_info' and 'focal_source' not in cams['rear']
    assert (cams['front']['latency_p50_ms'], cams['front']['latency_p95_ms']) == ('6.00', '11.40')
    assert diag.status_of(statuses, 'rear').level == DiagnosticStatus.WARN  # nothing processed
    assert diag.status_of(statuses, 'side') is None and diag.values_of([], 'side') == {}


def test_one_camera_reports_on_the_nodes_status():
    d = diag.Diagnostics(Node())
    cam = camera('', 20, 20)
    statuses = d.statuses([cam], False, None)
    assert len(statuses) == 1 and not diag.camera_values(statuses)
    values = diag.values_of(statuses)
    assert values['frames_received'] == '20' and values['input_topic'] == '/robot//image'
    assert values['batches'] == '0' and values['mean_batch_size'] == 'nan'
    assert statuses[0].level == DiagnosticStatus.OK and statuses[0].message == 'ok'


def test_most_frames_lost_warns_and_losses_are_windowed():
    stats = diag.Stats()
    stats.received = 5
    assert stats.add_lost(10) is None  # 15 seen: the window is not over
    assert stats.add_lost(10) == (20, 25)
    assert stats.add_lost(1) is None  # a new window began
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    values = diag.values(status)
    assert (values['frames_lost'], values['lost_since_last_report']) == ('21', '21')
    assert status.level == DiagnosticStatus.WARN and 'lost in transport' in status.message
    values, idle = stats.report()  # rates and counts since the last report
    # Nothing arrived in this period: no frame went unprocessed in it either.
    assert (values['frames_lost'], values['lost_since_last_report'], idle) == ('21', '0', False)


def test_frames_unprocessed_in_a_period_warn_unless_a_slow_forward_is_still_running():
    stats = diag.Stats()
    stats.add_received(False)
    stats.add_timings(timings(1.0), 3000.0, None)  # a model that takes 3 s a frame
    assert stats.report()[1] is False
    stats.add_received(False)  # arrives while its forward is still running: not idle
    assert stats.report()[1] is False
    stats.processed_t -= 10.0  # 10 s without a frame processed while frames come
    stats.add_received(False)
    assert stats.report()[1] is True
    assert stats.report()[1] is False  # and nothing arrived since


def test_a_camera_that_stops_sending_is_not_ok_and_is_again_when_it_is_back():
    stats = diag.Stats()
    stats.add_received(False)
    stats.add_timings(timings(1.0), 3.0, None)
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert status.level == DiagnosticStatus.OK
    stats.received_t -= 2 * diag.SILENT_S  # the camera stopped
    stats.last_t -= 0.1
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert status.level == DiagnosticStatus.WARN
    assert status.message.startswith('no frames received for 2.') and \
        diag.values(status)['input_silent'] == 'true'
    stats.add_received(False)  # back
    stats.add_timings(timings(1.0), 3.0, None)
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert status.level == DiagnosticStatus.OK and status.message == 'ok'
    # Never a frame: said so; a camera slower than the period is not silent between frames.
    stats = diag.Stats()
    stats.received_t -= 2 * diag.SILENT_S
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert status.message == 'no frames received yet (is the camera publishing?)'
    stats = diag.Stats()
    for _ in range(3):
        stats.add_received(False)
        stats.received_t -= 5.0  # a frame every 5 s
    stats.add_timings(timings(1.0), 3.0, None)
    stats.last_t -= 1.0
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert diag.values(status)['input_silent'] == 'false', diag.values(status)


def test_bad_input_and_missing_points_warn():
    """Frames that cannot be used, and points a camera_info does not allow, are not 'ok'."""
    stats = diag.Stats()
    stats.received, stats.processed, stats.errors = 10, 4, 6
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert status.level == DiagnosticStatus.WARN and 'cannot be used' in status.message
    assert diag.values(status)['bad_since_last_report'] == '6'
    # The next period: frames fine again (the count is per report).
    stats.received, stats.processed = 20, 14
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert status.level == DiagnosticStatus.OK and status.message == 'ok'
    # Only bad frames from the start: said so, not 'no subscribers?'.
    stats = diag.Stats()
    stats.received, stats.errors = 5, 5
    status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
    assert 'cannot be used' in status.message
    cam = camera('front', received=10, processed=10)
    cam.notes['points'] = 'none: no camera_info received'
    _, status = diag.Diagnostics(Node()).statuses([cam], True, None)
    assert status.level == DiagnosticStatus.WARN
    assert status.message == 'points not published (none: no camera_info received)'
    cam.notes['points'] = 'published'
    _, status = diag.Diagnostics(Node()).statuses([cam], True, None)
    assert status.level == DiagnosticStatus.OK


def test_frames_stamped_ahead_of_the_node_clock_warn():
    """A camera clock ahead of the node's (age < -AHEAD_S) is named; a small lead is not."""
    def status_for(age_ms):
        stats = diag.Stats()
        for _ in range(5):
            stats.add_received(False)
            stats.add_timings(timings(1.0), 5.0, age_ms)
        status, = diag.Diagnostics(Node()).statuses([camera_of(stats)], False, None)
        return status
    for lead_s in (3.5, 1e6):
        status = status_for(-lead_s * 1e3)
        assert status.level == DiagnosticStatus.WARN, lead_s
        assert status.message.startswith(f"frames are stamped {lead_s:.1f} s ahead of this "
                                         "node's clock (frame_age_p50_ms)"), status.message
    for age_ms in (-0.5e3 * diag.AHEAD_S, 40.0, 3.6e6, None):  # a bag replayed late: not this
        status = status_for(age_ms)
        assert status.level == DiagnosticStatus.OK and status.message == 'ok', age_ms


def test_diagnostics_say_why_arriving_anchors_give_no_metres():
    from dpt_ros.core.anchors import AnchorError, AnchorInput
    from dpt_ros.core.config import AnchorsConfig
    from dpt_ros.core.metric import FitReport
    anchors = AnchorInput('points')
    cam = SimpleNamespace(name='', anchors=anchors, anchor_topics=('anchors/points',),
                          metre_dropouts=0)
    pipe = SimpleNamespace(depth_mode=lambda: 'fitted',
                           fit_report=lambda name: FitReport(state='no anchors'))

    def status():
        values = dict(diag.anchor_values(cam, pipe), metric_suspended='true')
        return values, diag._status('dpt', values, False).message
    values, message = status()
    assert 'anchors_problem' not in values and message.startswith('no metres (no anchors)')
    # Anchors stamped half a second before their images (a clock offset): said so.
    anchors.add(SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=10, nanosec=0),
                                                       frame_id='cam')))
    assert anchors.for_frame(10_500_000_000, (64, 48), None, 'cam', AnchorsConfig()) is None
    values, message = status()
    assert values['fit_state'] == 'no anchors'
    assert values['anchors_problem'] == ('the nearest anchor message is 0.500 s from the '
                                         'frame, beyond anchors.max_age 0.1 s')
    assert values['anchors_problem'] in message
    # One that pairs but cannot be used: its reason.
    anchors.add(SimpleNamespace(header=SimpleNamespace(
        stamp=SimpleNamespace(sec=10, nanosec=500_000_000), frame_id='cam')))
    with pytest.raises(AnchorError):
        anchors.for_frame(10_500_000_000, (64, 48), None, 'cam', AnchorsConfig())
    assert status()[0]['anchors_problem'].startswith(
        'anchors unusable: anchors/points need camera_info')
