"""Mechanics of the research options of seed 000 (issue 4): SupCon, query-side positives, BYOL, the spatial encoder
and spatial fusion, n_query in DASR's method. Each test checks what the option does, not only that it runs."""
import pytest
import torch
import torch.nn.functional as F

from blindsr.contrastive import BYOL, MoCo, byol_loss, info_nce_loss
from blindsr.methods import ContrastiveSR, DASRMethod
from blindsr.models import create_model
from blindsr.models.dasr import BlindSR, DASpatialFusion
from blindsr.models.encoders import DegradationEncoder, SpatialDegradationEncoder

TINY = dict(scale=2, n_feats=8, n_groups=1, n_blocks=1, width=4)


# ---- SupCon -------------------------------------------------------------------------------------------------------

def test_supcon_loss_is_the_mean_over_positive_columns_and_every_key_is_enqueued():
    torch.manual_seed(0)
    enc = DegradationEncoder(width=8).train()
    moco = MoCo(enc, dim=32, K=24, objective='supcon', m=1.0).train()
    queue_before = moco.queue.keys.clone()
    q_img, k_img = torch.rand(2, 3, 24, 24), torch.rand(2, 3, 3, 24, 24)
    fea, logits, labels = moco.logits(enc, q_img, k_img)
    assert logits.shape == (2, 3 + 24) and labels.dtype == torch.bool and labels.sum().item() == 6
    # recompute by hand: q . k_p / T and q . queue / T, then -mean_p log softmax
    with torch.no_grad():
        q = F.normalize(enc(q_img)[1], dim=1)
        k = F.normalize(moco.encoder_k(k_img.flatten(0, 1))[1], dim=1).view(2, 3, -1)
    manual = torch.cat([torch.einsum('bd,bpd->bp', q, k), q @ queue_before.t()], 1) / moco.T
    torch.testing.assert_close(logits.detach(), manual, atol=1e-4, rtol=0)
    expected = -F.log_softmax(manual, 1)[:, :3].mean()
    torch.testing.assert_close(info_nce_loss(logits, labels).detach(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(moco.queue.keys[:6], k.flatten(0, 1), atol=1e-5, rtol=0)
    moco.criterion(logits, labels)[0].backward()
    assert all(p.grad is None for p in moco.encoder_k.parameters())
    assert all(p.grad is not None for p in enc.parameters())


def test_supcon_with_one_positive_is_infonce():
    torch.manual_seed(3)
    enc = DegradationEncoder(width=8).train()
    a = MoCo(enc, dim=32, K=16, generator=torch.Generator().manual_seed(0)).train()
    b = MoCo(enc, dim=32, K=16, generator=torch.Generator().manual_seed(0), objective='supcon').train()
    b.load_state_dict(a.state_dict())
    x, y = torch.rand(4, 3, 24, 24), torch.rand(4, 3, 24, 24)
    la, lb = a(enc, x, y)[1], b(enc, x, y[:, None])[1]
    torch.testing.assert_close(la, lb, atol=1e-5, rtol=0)


# ---- positives on the query side ----------------------------------------------------------------------------------

def test_query_side_positives_average_the_query_and_train_every_view():
    torch.manual_seed(0)
    enc = DegradationEncoder(width=8)
    moco = MoCo(enc, dim=32, K=16).train()
    enc.eval()   # running BN statistics, so views encoded alone are comparable
    views = torch.rand(2, 4, 3, 24, 24, requires_grad=True)
    fea, q = moco.query(enc, views)
    single = torch.stack([F.normalize(enc(views[:, i])[1], dim=1) for i in range(4)], 1)
    torch.testing.assert_close(q, F.normalize(single.mean(1), dim=1), atol=1e-5, rtol=0)
    torch.testing.assert_close(fea, enc(views[:, 0])[0], atol=1e-5, rtol=0)
    fea, logits, labels = moco.logits(enc, views, torch.rand(2, 3, 24, 24))
    assert logits.shape == (2, 17)
    moco.criterion(logits, labels)[0].backward()
    assert (views.grad.abs().sum((0, 2, 3, 4)) > 0).all()


def test_blindsr_super_resolves_the_first_query_view():
    torch.manual_seed(0)
    m = BlindSR(**TINY).train()
    views = torch.rand(2, 3, 3, 12, 12)
    captured = {}
    h = m.sr_net.register_forward_pre_hook(lambda mod, args: captured.update(x=args[0]))
    sr, loss, acc = ContrastiveSR(m, MoCo(m.encoder, K=16))(views, torch.rand(2, 3, 12, 12))
    h.remove()
    assert torch.equal(captured['x'], views[:, 0]) and sr.shape == (2, 3, 24, 24)


def test_trainer_n_query_routes_patches(tmp_path, monkeypatch):
    from blindsr.data import HRImageFolder
    from blindsr.degradations import DASRDegradation
    from blindsr.train import TrainConfig, Trainer
    imgs = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    data = HRImageFolder(images=imgs, patch_size=16, n_patches=4)       # 3 query views + 1 key
    cfg = TrainConfig(epochs_encoder=1, epochs_joint=1, steps_per_epoch=2, batch_size=2, progress=False, val_every=0)
    method = lambda n_query: DASRMethod(create_model('blindsr', **TINY), degradation=DASRDegradation(scale=2, sigma=1.0), K=8, n_query=n_query)
    t = Trainer(method(3), data, cfg, tmp_path)
    seen_q, seen_k = [], []
    for enc, seen in ((t.model.encoder, seen_q), (t.method.objective.encoder_k, seen_k)):
        orig = enc.forward
        monkeypatch.setattr(enc, 'forward', lambda x, orig=orig, seen=seen: (seen.append(x.shape[0]), orig(x))[1])
    t.fit()
    assert set(seen_q) == {6} and set(seen_k) == {2}        # 2 images x 3 query views; 2 images x 1 key
    assert int(t.method.objective.queue.ptr) == (4 * 2) % 8
    with pytest.raises(ValueError, match='n_query=4'):
        Trainer(method(4), data, TrainConfig(batch_size=2, progress=False), tmp_path / 'b').train_step(next(iter(torch.utils.data.DataLoader(data, batch_size=2))))


# ---- BYOL ---------------------------------------------------------------------------------------------------------

def test_byol_gradients_reach_online_and_predictor_never_the_target():
    torch.manual_seed(0)
    enc = DegradationEncoder(width=8).train()
    byol = BYOL(enc, dim=32, m=0.9).train()
    fea, p, z = byol.predict(enc, torch.rand(4, 3, 24, 24), torch.rand(4, 2, 3, 24, 24))
    loss, acc = byol.criterion(p, z)
    loss.backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in enc.parameters() if q.ndim > 1)
    assert all(q.grad is not None for q in byol.predictor.parameters())
    assert all(k.grad is None and not k.requires_grad for k in byol.encoder_k.parameters())
    torch.testing.assert_close(loss, (byol_loss(p[0], z[0]) + byol_loss(p[1], z[1])) / 2)
    assert 0 <= acc.item() <= 1


def test_byol_target_is_the_averaged_momentum_projection():
    torch.manual_seed(1)
    enc = DegradationEncoder(width=8).train()
    byol = BYOL(enc, dim=32, m=1.0, symmetric=False).train()
    byol.encoder_k.eval()
    keys = torch.rand(3, 4, 3, 24, 24)
    _, p, z = byol.predict(enc, torch.rand(3, 3, 24, 24), keys)
    with torch.no_grad():
        single = torch.stack([F.normalize(byol.encoder_k(keys[:, i])[1], dim=1) for i in range(4)], 1)
    torch.testing.assert_close(z[0], F.normalize(single.mean(1), dim=1), atol=1e-5, rtol=0)


def test_byol_momentum_and_no_queue_in_blindsr(tmp_path):
    from blindsr.train import TrainConfig, Trainer
    from blindsr.models import load_model
    from blindsr.data import HRImageFolder
    from blindsr.degradations import DASRDegradation
    imgs = [torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    data = HRImageFolder(images=imgs, patch_size=16, n_patches=2)
    cfg = TrainConfig(epochs_encoder=1, epochs_joint=1, steps_per_epoch=2, batch_size=2, progress=False, val_every=0)
    t = Trainer(DASRMethod(create_model('blindsr', **TINY), 'byol', degradation=DASRDegradation(scale=2, sigma=1.0), m=0.5), data, cfg, tmp_path)
    wk0 = t.method.objective.encoder_k.features[0].weight.clone()
    t.fit()
    assert not torch.equal(wk0, t.method.objective.encoder_k.features[0].weight)          # the target followed
    sd = torch.load(tmp_path / 'model_inference.pt', weights_only=True)['state_dict']
    assert {k.split('.')[0] for k in sd} == {'encoder', 'sr_net'}                      # no predictor, target or queue
    assert not any(k.startswith(('encoder.predictor', 'encoder.encoder_k', 'encoder.queue')) for k in sd)
    m = load_model(tmp_path / 'model_inference.pt')
    assert m(torch.rand(1, 3, 10, 10)).shape == (1, 3, 20, 20)


# ---- spatial representation and fusion ----------------------------------------------------------------------------

def test_spatial_encoder_keeps_the_resolution_and_is_local():
    enc = SpatialDegradationEncoder(width=4).eval()
    x = torch.rand(1, 3, 30, 30)
    fea, proj = enc(x)
    assert fea.shape == (1, 16, 30, 30) and proj.shape == (1, 16)
    y = x.clone(); y[..., :10] = 0.5                                  # change the left third only
    change = (enc(y)[0] - fea)[0].abs().sum(0)
    assert change[:, 10 + 6:].max() == 0 and change[:, :10].min() > 0


def test_spatial_fusion_receives_the_map_and_attends_locally():
    torch.manual_seed(0)
    m = BlindSR(encoder_arch='spatial', fusion='spatial', **TINY).eval()
    fusions = [mod for mod in m.modules() if isinstance(mod, DASpatialFusion)]
    assert len(fusions) == 2
    reps = []
    h = fusions[0].register_forward_pre_hook(lambda mod, args: reps.append(args[1]))
    with torch.no_grad(): sr = m(torch.rand(1, 3, 11, 14))
    h.remove()
    assert sr.shape == (1, 3, 22, 28) and reps[0].shape == (1, 64, 11, 14)   # rep_dim 64 per LR pixel
    f = DASpatialFusion(8, 6)
    x, rep = torch.rand(1, 8, 9, 9), torch.randn(1, 6, 9, 9)
    a = f.attention(x, rep)
    torch.testing.assert_close(a.sum(1), torch.ones(1, 9, 9))
    # with one-hot attention on the centre, the local mix is the identity: output = conv(lrelu(x)) + x * gate
    with torch.no_grad():
        f.local[-1].weight.zero_(); f.local[-1].bias.fill_(-1e4); f.local[-1].bias[4] = 1e4
        expected = f.conv(F.leaky_relu(x, 0.1)) + x * f.gate(rep.mean((2, 3), keepdim=True))
        torch.testing.assert_close(f(x, rep), expected, atol=1e-5, rtol=0)
    # a vector representation is the same vector at every pixel
    v = torch.randn(1, 6)
    torch.testing.assert_close(f(x, v), f(x, v[:, :, None, None].expand(-1, -1, 9, 9)), atol=1e-6, rtol=0)


def test_spatial_encoder_with_vector_fusion_pools_the_map():
    torch.manual_seed(0)
    m = BlindSR(encoder_arch='spatial', fusion='da', **TINY).eval()
    lr = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        fea_map = m.encoder(lr)[0]
        torch.testing.assert_close(m(lr), m.sr_net(lr, fea_map.mean((2, 3))), atol=1e-5, rtol=0)
    assert m.representation(lr).shape == (1, 16) and m.representation(lr, pooled=False).shape == (1, 16, 10, 10)
