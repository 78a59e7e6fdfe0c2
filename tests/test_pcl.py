"""PCL-SISR's loss (blindsr.losses) and the alternating discriminator / generator updates of the adversarial methods
(blindsr.methods), and training with them."""
import numpy as np
import pytest
import torch
import torch.nn as nn
from skimage import data as skdata

from blindsr.degradations import BicubicDegradation
from blindsr.losses import PerceptualLoss, gaussian_blur, pcl_loss, pcl_samples
from blindsr.methods import AdversarialMethod, DASRMethod, PCLMethod, SRMethod, StepContext
from blindsr.models import create_model
from blindsr.models.discriminators import VGG19_LAYERS
from blindsr.train import TrainConfig, Trainer, load_checkpoint, read_training_log


def photos(size=64):
    "Two real photographs (astronaut, coffee), (2, 3, size, size) in [0, 1]."
    crops = [skdata.astronaut()[100:100 + size, 180:180 + size], skdata.coffee()[100:100 + size, 200:200 + size]]
    return torch.stack([torch.from_numpy(c.copy()).permute(2, 0, 1).float() / 255 for c in crops])


def ctx_for(method):
    return StepContext(0, 0, 'joint', method.net, torch.device('cpu'))


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_pcl_loss_prefers_hr_to_blurred_hr(seed):
    "The acceptance property: L_CL(output = HR) < L_CL(output = blurred HR), through a fresh discriminator."
    torch.manual_seed(seed)
    disc = create_model('pcl_discriminator')
    hr = photos()
    lr = BicubicDegradation(4)(hr)[0]
    samples = pcl_samples(hr, lr, 3, torch.Generator().manual_seed(seed))
    blurred = gaussian_blur(hr, 7, torch.full((2,), 1.5), torch.full((2,), 1.5))
    with torch.no_grad():
        l_hr, l_blur = pcl_loss(disc, hr, samples).item(), pcl_loss(disc, blurred, samples).item()
    assert l_hr < l_blur, (l_hr, l_blur)


def test_gradients_reach_the_generator_and_the_discriminator_only_in_its_step():
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Upsample(scale_factor=4, mode='bicubic'), nn.Conv2d(3, 3, 3, padding=1))
    pcl = PCLMethod(SRMethod(gen, BicubicDegradation(4)), k=2, adv_weight=1e-3)   # the adversarial term also goes through D
    hr = photos(48)
    d_before = {k: v.clone() for k, v in pcl.discriminator.state_dict().items()}
    loss, logs = pcl.step(hr, ctx_for(pcl))
    assert {'loss_d', 'loss_pcl', 'loss_adv'} <= set(logs)
    # discriminator step: the discriminator moved, the generator received nothing
    assert all(p.grad is None for p in gen.parameters())
    assert any(not torch.equal(d_before[k], v) for k, v in pcl.discriminator.state_dict().items() if v.is_floating_point())
    d_grads = [p.grad.clone() for p in pcl.discriminator.parameters()]
    # generator step: the loss (L1 + the method's terms) reaches every generator parameter and no discriminator parameter
    opt = torch.optim.SGD(gen.parameters(), lr=0.1)
    loss.backward()
    opt.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.parameters())
    assert all(torch.equal(g, p.grad) for g, p in zip(d_grads, pcl.discriminator.parameters()))
    assert all(p.requires_grad for p in pcl.discriminator.parameters())   # unfrozen again for the next D step
    # and the contrastive gradient alone is non-zero at the generator
    gen.zero_grad()
    lr = BicubicDegradation(4)(hr)[0]
    pcl_loss(pcl.discriminator, gen(lr), pcl.samples(hr, lr, torch.Generator().manual_seed(0))).backward()
    assert gen[1].weight.grad.abs().sum() > 0


def test_samples_follow_the_recipe():
    hr, lr = photos(32), BicubicDegradation(4)(photos(32))[0]
    pos, neg = pcl_samples(hr, lr, k=4, generator=torch.Generator().manual_seed(0))
    assert pos.shape == neg.shape == (2, 5, 3, 32, 32)
    assert torch.equal(pos[:, 0], hr)
    # negatives 1..K are blurred: less high-frequency energy than HR; positives 1..K differ from HR (sharpened/softened)
    hf = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean((-1, -2, -3))
    assert (hf(neg[:, 1:]) < hf(hr)[:, None]).all()
    assert all(not torch.equal(pos[:, j], hr) for j in range(1, 5))
    with pytest.raises(ValueError, match='k must be an int >= 0'):
        pcl_samples(hr, lr, k=-1)


def test_adversarial_loss_with_perceptual_weights(tmp_path):
    "SRGAN's losses: a VGG19 file in torchvision's layout enables the perceptual term; it never enters the checkpoint."
    sd, c = {}, 3
    for i, n in enumerate(VGG19_LAYERS):
        if n.startswith('conv'):
            co = 64 * 2 ** min(int(n[4]) - 1, 3)
            sd[f'features.{i}.weight'], sd[f'features.{i}.bias'] = torch.randn(co, c, 3, 3) * 0.05, torch.zeros(co)
            c = co
    torch.save(sd, tmp_path / 'vgg19.pth')
    gen = nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'), nn.Conv2d(3, 3, 3, padding=1))
    adv = AdversarialMethod(SRMethod(gen, BicubicDegradation(2)), perceptual=PerceptualLoss(tmp_path / 'vgg19.pth', 'relu2_2'))
    hr = photos(32)
    loss, logs = adv.step(hr, ctx_for(adv))
    assert set(logs) == {'loss_sr', 'loss_aux', 'loss_d', 'loss_adv', 'loss_perceptual'} and logs['loss_perceptual'] > 0
    loss.backward()
    assert gen[1].weight.grad.abs().sum() > 0
    state = adv.training_state()
    assert set(state) == {'generator', 'discriminator', 'optimizer'}      # the frozen VGG is not training state
    assert not any('vgg' in k for k in state['discriminator']) and state['generator'] == {}


class Photos(torch.utils.data.Dataset):
    def __len__(self): return 8
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        y, x = (int(v) for v in torch.randint(0, 200, (2,), generator=g))
        img = skdata.astronaut()[y:y + 32, x:x + 32]
        return torch.from_numpy(img.copy()).permute(2, 0, 1).float()[None] / 255


def test_training_with_pcl_resumes_exactly(tmp_path):
    "A non-blind backbone with PCLLoss: stopping after epoch 1 and resuming gives the weights of an uninterrupted run."
    def make(out):
        torch.manual_seed(5)
        disc = create_model('pcl_discriminator', n_feats=8)
        cfg = TrainConfig(epochs_encoder=0, epochs_joint=2, steps_per_epoch=2, batch_size=2, lr_joint=1e-3, progress=False)
        torch.manual_seed(0)
        model = create_model('edsr_baseline', scale=2, n_feats=8, n_blocks=1)
        return Trainer(PCLMethod(SRMethod(model), disc, k=1), Photos(), cfg, out)
    full = make(tmp_path / 'full'); full.fit()
    part = make(tmp_path / 'part')
    part.total_steps = 2; part.fit()
    resumed = make(tmp_path / 'part'); resumed.total_steps = 4
    resumed.resume(tmp_path / 'part' / 'checkpoints' / 'last.pt'); resumed.fit()
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    for (k, a), b in zip(full.method.discriminator.state_dict().items(), resumed.method.discriminator.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), k
    log = read_training_log(tmp_path / 'full' / 'log.csv')
    assert np.isfinite(log['loss_aux']).any() and np.isfinite(log['loss_d']).any()
    assert load_checkpoint(tmp_path / 'full' / 'checkpoints' / 'last.pt')['training']['discriminator'] is not None
    plain = Trainer(SRMethod(create_model('edsr_baseline', scale=2, n_feats=8, n_blocks=1)), Photos(),
                    TrainConfig(epochs_encoder=0, epochs_joint=1, steps_per_epoch=1, batch_size=2, progress=False), tmp_path / 'plain')
    with pytest.raises(Exception, match='written by a PCLMethod run, this trainer trains with SRMethod'):
        plain.resume(tmp_path / 'full' / 'checkpoints' / 'last.pt')


def test_pcl_wraps_dasr(tmp_path):
    "A blind backbone: the joint step adds MoCo's loss and PCL's to L1; PCL's samples use the query's LR."
    torch.manual_seed(0)
    cfg = TrainConfig(epochs_encoder=0, epochs_joint=1, steps_per_epoch=1, batch_size=4, progress=False)
    class Two(Photos):
        def __getitem__(self, i): return torch.cat([super().__getitem__(i), super().__getitem__(i + 8)])
    dasr = DASRMethod(create_model('blindsr', scale=2, n_feats=8, n_groups=1, n_blocks=1, width=8), degradation=BicubicDegradation(2),
                      K=8, bn_groups=2)
    t = Trainer(PCLMethod(dasr, create_model('pcl_discriminator', n_feats=8), k=1), Two(), cfg, tmp_path / 'dasr')
    out = t.train_step(torch.stack([t.train_data[i] for i in range(4)]))
    assert out['loss_contrast'] > 0 and out['loss_pcl'] > 0 and out['loss_d'] > 0
    assert abs(out['loss'] - (out['loss_sr'] + out['loss_contrast'] + out['loss_aux'])) < 1e-4
