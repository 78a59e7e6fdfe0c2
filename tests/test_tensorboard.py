"""TensorBoard logging of the Trainer, read back with TensorBoard's own reader: the numbers of log.csv, validation
crops, the representation of probe images for the projector, and events purged after a resume."""
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_train import SETUP  # noqa: E402

exec(SETUP)   # make_trainer: a tiny DASR run with validation pairs, log_every=1

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def _events(run: Path) -> EventAccumulator:
    ev = EventAccumulator(str(run / 'tensorboard'), size_guidance={'scalars': 0, 'images': 0, 'tensors': 0})
    ev.Reload()
    return ev


def _csv(run: Path) -> list[dict]:
    with open(run / 'log.csv', newline='') as f: return list(csv.DictReader(f))


def _probe(model):
    "8 random 'held-out' crops through the model's encoder, with two labels."
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 12, 12, generator=g)
    with torch.no_grad(): fea = model.encoder(x)[0]
    return fea, {'image_name': np.array([f'img{i % 4}' for i in range(8)]), 'sigma': np.repeat([0.0, 2.4], 4)}, x


def test_events_hold_the_log_images_and_the_projector(tmp_path):
    run = tmp_path / 'run'
    t = make_trainer(run)
    t.probe = _probe
    t.fit()
    rows, ev = _csv(run), _events(run)
    train = [r for r in rows if r['phase'] != 'val']
    val = [r for r in rows if r['phase'] == 'val']
    # every number of the CSV is a scalar at its step
    assert [e.step for e in ev.Scalars('train/loss')] == [int(r['step']) for r in train]
    assert np.allclose([e.value for e in ev.Scalars('train/loss')], [float(r['loss']) for r in train], rtol=1e-6)
    assert np.allclose([e.value for e in ev.Scalars('train/lr')], [float(r['lr']) for r in train])
    assert [e.step for e in ev.Scalars('val/psnr')] == [int(r['step']) for r in val] and len(val) == 2
    assert np.allclose([e.value for e in ev.Scalars('val/psnr')], [float(r['val_psnr']) for r in val], atol=1e-4)
    # validation crops: LR enlarged | output | target, at each validation
    assert sorted(ev.Tags()['images']) == ['val/v0', 'val/v1']
    imgs = ev.Images('val/v0')
    assert [i.step for i in imgs] == [int(r['step']) for r in val]
    assert imgs[-1].width == 3 * imgs[-1].height == 3 * 16
    # the projector: one embedding per validation, N rows of D features and their labels
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    config = text_format.Parse((run / 'tensorboard' / 'projector_config.pbtxt').read_text(), ProjectorConfig())
    assert len(config.embeddings) == 2 and all(e.tensor_name.startswith('representation') for e in config.embeddings)
    last = config.embeddings[-1]
    tensors = np.loadtxt(run / 'tensorboard' / last.tensor_path, delimiter='\t', ndmin=2)
    with torch.no_grad(): expected = _probe(t.inference_model())[0].numpy()
    assert tensors.shape == expected.shape and np.allclose(tensors, expected, atol=1e-5)
    meta = (run / 'tensorboard' / last.metadata_path).read_text().splitlines()
    assert meta[0].split('\t') == ['image_name', 'sigma'] and len(meta) == 9
    assert (run / 'tensorboard' / last.sprite.image_path).is_file()   # the crops as thumbnails


def test_a_resumed_run_purges_the_events_past_its_checkpoint(tmp_path):
    "A run dies after writing events past its last checkpoint; the restart's events replace them: no step twice."
    run = tmp_path / 'run'
    t = make_trainer(run, ckpt_every_steps=None)
    class Dies(RuntimeError): pass
    orig = t.train_step
    def step_then_die(batch):
        out = orig(batch)
        if t.step == 5: t._log({**out, 'step': 5, 'epoch': 2, 'lr': 1.0}); t._tb().flush(); raise Dies
        return out
    t.train_step = step_then_die
    with pytest.raises(Dies): t.fit()
    before = [e.step for e in _events(run).Scalars('train/loss')]
    assert before[-1] == 5 and 5 in before                           # step 5 reached the disk, past the checkpoint of step 3
    t._tb_writer.close()
    again = make_trainer(run, ckpt_every_steps=None).resume(run / 'checkpoints' / 'last.pt')
    assert again.step == 3
    again.fit()
    steps = [e.step for e in _events(run).Scalars('train/loss')]
    assert steps == sorted(set(steps)) == [int(r['step']) for r in _csv(run) if r['phase'] != 'val']
    assert steps[-1] == 9


def test_tensorboard_off_writes_no_events(tmp_path):
    run = tmp_path / 'run'
    make_trainer(run, tensorboard=False, epochs_joint=1).fit()
    assert not (run / 'tensorboard').exists() and (run / 'log.csv').is_file()
