# Copyright 2026 dpt_ros contributors
# Licensed under the Apache License, Version 2.0

"""Checkpoint loading through the real path: tiny save_pretrained models, and every error."""

import shutil

import pytest
import torch

from dpt_ros.core.config import ConfigError, ModelConfig
from dpt_ros.core.models import load_model, ModelLoadError, resolve_device, resolve_dtype


def test_tiny_checkpoints_load_back(tiny_depth, tiny_seg, tiny_metric):
    notes = []
    d = load_model(str(tiny_depth), 'depth', ModelConfig(device='cpu'), notes.append)
    assert d.task == 'depth' and not d.metric and d.device.type == 'cpu'
    assert d.spec.height == d.spec.width  # ViT DPT: square input from preprocessor_config
    s = load_model(str(tiny_seg), 'segmentation', ModelConfig(device='cpu'), notes.append)
    assert s.labels == ['floor', 'wall', 'ceiling', 'object', 'person']
    assert not hasattr(s.net, 'auxiliary_head') or s.net is not None
    m = load_model(str(tiny_metric), 'depth', ModelConfig(device='cpu'), notes.append)
    assert m.metric and m.model_type == 'depth_anything'
    for net in (d.net, s.net, m.net):  # eval everywhere: a later .train() must not flip it
        assert not any(mod.training for mod in net.modules())
    x = torch.rand(1, 3, 70, 98)
    out = m(x)
    assert out.shape == (1, 70, 98) and torch.isfinite(out).all()


def test_half_precision_on_cpu_falls_back_with_a_note(tiny_depth):
    notes = []
    m = load_model(str(tiny_depth), 'depth', ModelConfig(device='cpu', precision='fp16'),
                   notes.append)
    assert m.dtype == torch.float32
    assert any('fp32' in n and 'CPU' in n.upper() for n in notes), notes
    assert resolve_dtype('auto', torch.device('cpu'))[0] == torch.float32


def test_device_strings():
    assert resolve_device('cpu').type == 'cpu'
    if not torch.cuda.is_available():
        assert resolve_device('auto').type == 'cpu'
        with pytest.raises(ConfigError, match='CUDA'):
            resolve_device('cuda:0')


def expect_error(source, task='depth', *words):
    with pytest.raises(ModelLoadError) as info:
        load_model(str(source), task, ModelConfig(device='cpu'), lambda m: None)
    text = str(info.value)
    for w in words:
        assert w in text, text
    return text


def test_missing_folder(tmp_path):
    expect_error(tmp_path / 'nope', 'depth', str(tmp_path / 'nope'), 'does not exist')


def test_folder_without_config(tmp_path):
    (tmp_path / 'x').mkdir()
    expect_error(tmp_path / 'x', 'depth', 'config.json')


def test_corrupt_weights(tmp_path, tiny_depth):
    bad = tmp_path / 'bad'
    shutil.copytree(tiny_depth, bad)
    w = bad / 'model.safetensors'
    w.write_bytes(w.read_bytes()[:1000])
    expect_error(bad, 'depth', str(bad))


def test_bin_only_folder_is_refused(tmp_path, tiny_depth):
    bad = tmp_path / 'binonly'
    shutil.copytree(tiny_depth, bad)
    (bad / 'model.safetensors').rename(bad / 'pytorch_model.bin')
    expect_error(bad, 'depth', 'safetensors', '.bin')


def test_task_mismatch_both_ways(tiny_depth, tiny_seg):
    expect_error(tiny_seg, 'depth', 'segmentation', 'model.segmentation')
    expect_error(tiny_depth, 'segmentation', 'depth', 'model.depth')


def test_hub_id_offline_says_how_to_fix():
    text = expect_error('Intel/dpt-hybrid-midas', 'depth', 'Intel/dpt-hybrid-midas')
    assert 'hf download' in text


def test_never_trust_remote_code(tiny_depth, monkeypatch):
    import transformers
    seen = []
    # Every model class loads through PreTrainedModel.from_pretrained (dpt_ros asks for the
    # concrete class, e.g. TIPSv2-DPT's dense one); configs through AutoConfig.
    for cls in (transformers.PreTrainedModel, transformers.AutoConfig):
        real = cls.from_pretrained.__func__

        def spy(klass, *a, _real=real, **kw):
            seen.append(kw)
            return _real(klass, *a, **kw)
        monkeypatch.setattr(cls, 'from_pretrained', classmethod(spy))
    load_model(str(tiny_depth), 'depth', ModelConfig(device='cpu'), lambda m: None)
    assert seen and all(kw.get('trust_remote_code', False) is False for kw in seen)
    assert any(kw.get('use_safetensors') is True for kw in seen)


def test_more_classes_than_16_bit_ids_is_refused(tmp_path):
    """65537 classes: refused, not published with ids wrapped (class 65536 as 0)."""
    from dpt_ros.tools.sample import make_random_checkpoint
    path = make_random_checkpoint(tmp_path / 'seg', 'tiny-seg', overrides={'num_labels': 65537})
    with pytest.raises(ModelLoadError, match='65537 classes.*at most 65536'):
        load_model(str(path), 'segmentation', ModelConfig(device='cpu'))
