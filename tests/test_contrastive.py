"""MoCo mechanics (blindsr.contrastive): queue wraparound, momentum update, InfoNCE logits, determinism, and that the
state dict carries everything needed for an exact resume. MoCo holds the key side only; the trained encoder is passed in."""
import copy

import pytest
import torch
import torch.nn.functional as F

from blindsr.contrastive import MoCo, MoCoQueue, contrastive_accuracy, info_nce_logits, info_nce_loss
from blindsr.models.encoders import DegradationEncoder


def small_moco(seed=0, **kw):
    "(encoder, its MoCo)"
    torch.manual_seed(seed)
    enc = DegradationEncoder(width=4).train()
    return enc, MoCo(enc, dim=16, generator=torch.Generator().manual_seed(seed), **{'K': 8, 'm': 0.9, **kw}).train()


def batch(seed, n=4, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.rand(n, 3, size, size, generator=g)


def test_defaults_are_dasrs():
    m = MoCo(DegradationEncoder(width=64))
    assert (m.queue.dim, m.queue.K, m.m, m.T) == (256, 8192, 0.999, 0.07)


@pytest.mark.parametrize('B', [1, 2, 4, 8])
def test_enqueue_wraparound_for_divisors(B):
    K = 8
    q = MoCoQueue(dim=3, K=K)
    for step in range(3 * K // B + 1):
        keys = torch.full((B, 3), float(step))
        q.enqueue(keys)
        start = (step * B) % K
        assert torch.equal(q.keys[start:start + B], keys)
        assert int(q.ptr) == ((step + 1) * B) % K
    assert q.ptr.dtype == torch.long and q.ptr.shape == ()


def test_enqueue_non_divisor_wraps_in_order():
    q = MoCoQueue(dim=1, K=5)
    q.enqueue(torch.arange(3.)[:, None]); q.enqueue(torch.arange(3., 6.)[:, None])
    assert q.keys[:, 0].tolist() == [5., 1., 2., 3., 4.] and int(q.ptr) == 1


def test_enqueue_errors():
    q = MoCoQueue(dim=4, K=6)
    with pytest.raises(ValueError, match='batch of 7 keys does not fit a queue of K=6'): q.enqueue(torch.zeros(7, 4))
    with pytest.raises(ValueError, match=r'keys must be \(B, 4\)'): q.enqueue(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r'keys must be \(B, 4\)'): q.enqueue(torch.zeros(4))
    with pytest.raises(ValueError, match='dim and K must be positive'): MoCoQueue(dim=4, K=0)


def test_logits_shape_and_positive_highest_for_identical_inputs():
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(5, 16, generator=g), dim=1)
    queue = F.normalize(torch.randn(32, 16, generator=g), dim=1)
    logits, labels = info_nce_logits(q, q.clone(), queue, temperature=0.07)
    assert logits.shape == (5, 33) and labels.dtype == torch.long and labels.tolist() == [0] * 5
    assert torch.allclose(logits[:, 0], torch.full((5,), 1 / 0.07))
    assert (logits.argmax(1) == 0).all() and contrastive_accuracy(logits, labels) == 1
    assert torch.allclose(logits[:, 1:], q @ queue.t() / 0.07)
    assert torch.isclose(info_nce_loss(logits, labels), F.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match='temperature must be positive'): info_nce_logits(q, q, queue, 0)
    with pytest.raises(ValueError, match=r'queue must be \(K, 16\)'): info_nce_logits(q, q, queue[:, :8], 0.1)


def test_moco_identical_views_score_highest():
    enc, moco = small_moco()
    moco.logits(enc, *batch(1)); moco.logits(enc, *batch(2))   # the queue now holds keys of other images
    x, _ = batch(3)
    _, logits, labels = moco.logits(enc, x, x)
    # the key encoder equals the query encoder (momentum steps between equal weights), so a view is its own best match
    assert (logits.argmax(1) == 0).all() and torch.allclose(logits[:, 0], torch.full((4,), 1 / moco.T))


def test_momentum_update_exact():
    enc, moco = small_moco(m=0.75)
    with torch.no_grad():
        for p in enc.parameters(): p.add_(torch.randn_like(p))
    q0 = [p.clone() for p in enc.parameters()]
    k0 = [p.clone() for p in moco.encoder_k.parameters()]
    moco.logits(enc, *batch(2))
    for pq, pk, k1 in zip(q0, k0, moco.encoder_k.parameters()):
        torch.testing.assert_close(k1, 0.75 * pk + 0.25 * pq, rtol=1e-6, atol=1e-6)
    assert all(not p.requires_grad for p in moco.encoder_k.parameters())


def test_keys_enqueued_and_gradients_only_to_query_encoder():
    enc, moco = small_moco()
    x_q, x_k = batch(3)
    fea, logits, labels = moco.logits(enc, x_q, x_k)
    assert fea.shape == (4, 16) and logits.shape == (4, 9) and int(moco.queue.ptr) == 4
    with torch.no_grad():
        k = F.normalize(moco.encoder_k(x_k)[1], dim=1)
    torch.testing.assert_close(moco.queue.keys[:4], k)
    info_nce_loss(logits, labels).backward()
    assert all(p.grad is not None for p in enc.parameters())
    assert all(p.grad is None for p in moco.encoder_k.parameters())


def test_loss_in_one_call_and_training_needs_key():
    enc, moco = small_moco()
    x, k = batch(4)
    fea, loss, acc = moco(enc, x, k)
    assert fea.shape == (4, 16) and loss.ndim == 0 and 0 <= acc <= 1
    with pytest.raises(ValueError, match=r'needs \(im_q, im_k\)'): moco(enc, x, None)


def test_deterministic_given_seeds():
    outs = []
    for _ in range(2):
        enc, moco = small_moco(seed=5)
        for s in range(3): fea, logits, _ = moco.logits(enc, *batch(10 + s))
        outs.append((fea, logits, moco.queue.keys.clone(), moco.state_dict()))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1]) and torch.equal(outs[0][2], outs[1][2])
    assert all(torch.equal(outs[0][3][k], outs[1][3][k]) for k in outs[0][3])


def test_state_dict_resume_is_exact():
    "Queue, pointer and key encoder are in the state dict: a restored copy continues exactly like the original."
    enc_a, a = small_moco(seed=1)
    for s in range(3): a.logits(enc_a, *batch(s))
    sd = copy.deepcopy(a.state_dict())
    assert {'queue.keys', 'queue.ptr'} <= set(sd) and any(k.startswith('encoder_k.') for k in sd)
    enc_b, b = small_moco(seed=99)
    b.load_state_dict(sd); enc_b.load_state_dict(enc_a.state_dict())    # the trained encoder lives in the model
    ra, rb = a.logits(enc_a, *batch(7)), b.logits(enc_b, *batch(7))
    for u, v in zip(ra, rb): assert torch.equal(u, v)
    assert int(a.queue.ptr) == int(b.queue.ptr)


def test_moco_argument_errors():
    with pytest.raises(ValueError, match='momentum m must be in'): small_moco(m=1.5)
    with pytest.raises(ValueError, match='temperature T must be positive'): small_moco(T=0)
    enc = DegradationEncoder(width=4)
    moco = MoCo(enc, dim=32, K=8).train()
    with pytest.raises(ValueError, match='projection has 16 dims but the queue holds 32'): moco(enc, *batch(0))


# ---- several positives per image (issue 4, seed 000) -------------------------------------------------------


@pytest.mark.parametrize('positives,rows', [('average', 4), ('samples', 12)])
def test_multi_positive_shapes_queue_and_gradients(positives, rows):
    torch.manual_seed(0)
    enc = DegradationEncoder(width=8)
    moco = MoCo(enc, dim=32, K=24, positives=positives).train()
    q, k = torch.rand(4, 3, 24, 24), torch.rand(4, 3, 3, 24, 24)
    fea, logits, labels = moco.logits(enc, q, k)
    assert fea.shape == (4, 32) and logits.shape == (rows, 25) and labels.shape == (rows,)
    assert int(moco.queue.ptr) == rows % 24
    torch.nn.functional.cross_entropy(logits, labels).backward()
    assert all(p.grad is None for p in moco.encoder_k.parameters()), 'the key encoder must get no gradient'
    assert all(p.grad is not None for p in enc.parameters())


def test_averaged_key_is_the_normalised_centre_and_enters_the_queue():
    torch.manual_seed(1)
    enc = DegradationEncoder(width=8)
    moco = MoCo(enc, dim=32, K=16).train()
    moco.encoder_k.eval()   # running BN statistics: keys of single positives are comparable
    k = torch.rand(2, 5, 3, 24, 24)
    single = torch.stack([moco.keys(k[:, i]) for i in range(5)], 1)
    centre = moco.keys(k)
    torch.testing.assert_close(centre, torch.nn.functional.normalize(single.mean(1), dim=1), atol=1e-5, rtol=0)
    moco.m = 1.0   # freeze the key encoder so the queue entry can be compared after the step
    moco.logits(enc, torch.rand(2, 3, 24, 24), k)
    torch.testing.assert_close(moco.queue.keys[:2], centre, atol=1e-5, rtol=0)


def test_trainer_passes_all_positives(tmp_path):
    from blindsr.data import HRImageFolder
    from blindsr.degradations import DASRDegradation
    from blindsr.methods import DASRMethod
    from blindsr.models import create_model
    from blindsr.train import TrainConfig, Trainer
    imgs = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    data = HRImageFolder(images=imgs, patch_size=16, n_patches=4)      # 1 query + 3 positives
    cfg = TrainConfig(epochs_encoder=1, epochs_joint=1, steps_per_epoch=2, batch_size=2, progress=False, val_every=0)
    model = create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, width=8)
    t = Trainer(DASRMethod(model, degradation=DASRDegradation(scale=2, sigma=1.0), K=8, positives='samples'), data, cfg, tmp_path)
    t.fit()
    assert int(t.method.objective.queue.ptr) == (4 * 2 * 3) % 8   # 4 steps x 2 images x 3 positives, counted as samples


def test_trainer_multi_crop_sizes_reach_the_encoder(tmp_path, monkeypatch):
    "Multi-crop: 2 crops of 16 + 3 of 12 (HR 32/24 at x2) per image; each size gets its own key-encoder forward."
    from blindsr.data import HRImageFolder
    from blindsr.degradations import DASRDegradation
    from blindsr.methods import DASRMethod
    from blindsr.models import create_model
    from blindsr.train import TrainConfig, Trainer
    imgs = [torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    data = HRImageFolder(images=imgs, patch_size=[(32, 2), (24, 3)])
    cfg = TrainConfig(epochs_encoder=1, epochs_joint=1, steps_per_epoch=2, batch_size=2, progress=False, val_every=0)
    model = create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, width=8)
    t = Trainer(DASRMethod(model, degradation=DASRDegradation(scale=2, sigma=(0.5, 2.0)), K=8), data, cfg, tmp_path)
    seen = []
    enc_k = t.method.objective.encoder_k
    orig = enc_k.forward
    monkeypatch.setattr(enc_k, 'forward', lambda x: (seen.append(tuple(x.shape[-2:])), orig(x))[1])
    t.fit()
    assert (16, 16) in seen and (12, 12) in seen, seen     # LR crop sizes 32/2 and 24/2
    assert t.step == 4 and int(t.method.objective.queue.ptr) == (4 * 2) % 8


# --- degradation-aware objectives -------------------------------------------------------------------------------
from blindsr.contrastive import DegradationEstimator, DegradationTargets, WithEstimator, create_objective

TARGETS = DegradationTargets({'sigma': (0.2, 4.0), 'noise': (0.0, 10.0)})


def params_of(sigmas, noises): return {'sigma': torch.tensor(sigmas), 'noise': torch.tensor(noises)}


def test_degcon_positives_are_the_keys_of_one_degradation_and_a_resume_keeps_their_labels():
    enc, dc = small_moco(objective='degcon', targets=TARGETS, tolerance=0.05)
    q, k = batch(0)
    p = params_of([1.0, 1.0, 3.0, 3.05], [0., 0., 5., 5.])     # two pairs of (near-)equal degradations
    _, logits, labels = dc.logits(enc, q, k, p)
    assert labels[:, :4].tolist() == [[True, True, False, False], [True, True, False, False],
                                      [False, False, True, True], [False, False, True, True]]
    state = copy.deepcopy(dc.state_dict())
    assert torch.equal(state['queue.labels'][:4], TARGETS(p))     # the labels are part of the resumable state
    enc2, dc2 = small_moco(seed=1, objective='degcon', targets=TARGETS)
    dc2.load_state_dict(state)
    _, _, labels2 = dc2.logits(enc2, *batch(1), params_of([1.02] * 4, [0.] * 4))
    assert labels2[:, 4:8].tolist() == [[True, True, False, False]] * 4   # the queue's first two keys are near 1.02


def test_degcon_mask_removes_near_keys_from_the_softmax_only():
    enc, dm = small_moco(objective='degcon', targets=TARGETS, near='mask')
    p = params_of([1.0, 2.0, 3.0, 4.0], [0.] * 4)
    dm.logits(enc, *batch(0), p)
    _, logits, labels = dm.logits(enc, *batch(1), p)             # the same degradations again: the queue holds them
    assert labels.tolist() == [0, 1, 2, 3]
    masked = torch.isinf(logits)
    assert masked[:, 4:8].equal(torch.eye(4, dtype=torch.bool)) and not masked[:, :4].any() and not masked[:, 8:].any()
    loss, _ = dm.criterion(logits, labels)
    ref = F.cross_entropy(logits.masked_fill(masked, -1e9), labels)   # the same as leaving those columns out
    assert torch.allclose(loss, ref, atol=1e-5)


def test_estimator_gradients_reach_the_representation_and_the_weight_scales_them():
    torch.manual_seed(0)
    enc = DegradationEncoder(width=4).train()
    est = DegradationEstimator(enc, TARGETS)
    q, k = batch(0)
    p = params_of([0.2, 1.0, 2.0, 4.0], [0., 2.5, 5., 10.])
    fea, loss, acc = est(enc, q, k, p)
    g = torch.autograd.grad(loss, enc.features[0].weight)[0]
    assert g.abs().sum() > 0 and 0 <= acc.item() <= 1
    base = MoCo(enc, K=8, generator=torch.Generator().manual_seed(0))
    with_est = WithEstimator(copy.deepcopy(base), est, weight=0.0)
    plain = copy.deepcopy(base)
    l0 = with_est(enc, q, k, p)[1]
    l1 = plain(enc, q, k, p)[1]
    assert torch.allclose(l0, l1, atol=1e-6)                       # weight 0: the contrastive loss alone
    with_est2 = WithEstimator(copy.deepcopy(base), est, weight=2.0)
    l2 = with_est2(enc, q, k, p)[1]
    e = est.criterion(est.estimate(enc(q)[0]), TARGETS(p))[0]
    assert torch.allclose(l2 - l1, 2.0 * e, atol=1e-4)


def test_labelled_objectives_refuse_to_run_without_the_degradation():
    enc = DegradationEncoder(width=4)
    for name in ('degcon', 'estimator', 'infonce+estimator', 'degcon+estimator'):
        obj = create_objective(name, enc, K=8, targets=TARGETS)
        with pytest.raises(ValueError, match="needs the degradation's params"):
            obj(enc, *batch(0))
