"What tests/test_distributed.py and its torchrun worker share: the data, the degradation, the method and the config."
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from blindsr.degradations import DASRDegradation
from blindsr.methods import DASRMethod
from blindsr.models import create_model
from blindsr.train import TrainConfig

TINY_MODEL = dict(scale=2, n_feats=8, n_groups=1, n_blocks=1, width=8)
# bn_groups=2 counts BatchNorm groups over all processes: one per rank with 2 processes, two in one process
TINY_OBJECTIVE = dict(K=32, bn_groups=2)
GLOBAL_BATCH = 8


class Textures(Dataset):
    "Smooth random textures, two 32-pixel HR patches per item, reproducible per index."
    def __len__(self): return 32
    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=64, mode='bicubic', align_corners=False).clamp(0, 1)[0]
        return torch.stack([x[:, :32, :32], x[:, 32:, 32:]])


def degradation():
    "Noise-free: every random choice is a per-image parameter, which DDP draws exactly as one process does."
    return DASRDegradation(scale=2, sigma=(0.2, 2.0))


def config(epochs_joint: int) -> TrainConfig:
    return TrainConfig(epochs_encoder=1, epochs_joint=epochs_joint, steps_per_epoch=2, batch_size=GLOBAL_BATCH,
                       lr_encoder=1e-3, lr_joint=1e-3, val_every=0, progress=False, device='cpu')


def method() -> DASRMethod:
    "The tiny DASR, its initial weights fixed by the seed (every rank builds the same; DDP broadcasts rank 0's anyway)."
    torch.manual_seed(0)
    return DASRMethod(create_model('blindsr', **TINY_MODEL), degradation=degradation(), **TINY_OBJECTIVE)
