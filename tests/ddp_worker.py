"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (gloo, CPU): the collectives of
blindsr.distributed, a short DASR run, and the same run stopped after phase 1 and resumed. Rank 0 writes
`checks.json` (collectives, and whether the ranks' MoCo queues and key encoders agree) into OUT_DIR."""
import json
import sys
from pathlib import Path

import torch
import torch.nn as nn

from blindsr import distributed as ddp
from blindsr.train import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from ddp_common import Textures, config, method   # noqa: E402


def same_on_all_ranks(t: torch.Tensor) -> bool:
    return all(torch.equal(x, ddp.gather_batch(t[None])[0]) for x in ddp.gather_batch(t[None]))


def main(out: Path):
    ddp.init_distributed()
    r, w = ddp.rank(), ddp.world_size()
    checks = {'world_size': w}
    # collectives: rank order, averaged gradients, averaged numbers
    checks['gather'] = ddp.gather_batch(torch.full((2, 1), float(r))).flatten().tolist()
    lin = nn.Linear(1, 1, bias=False); lin.weight.data.fill_(1.)
    (lin(torch.tensor([[float(r + 1)]])).sum()).backward()          # grad = r + 1
    ddp.average_gradients(lin); checks['avg_grad'] = lin.weight.grad.item()
    checks['mean'] = ddp.mean_over_ranks({'x': float(r)})['x']
    # a run of 1 encoder epoch + 1 joint epoch, and the same run stopped after phase 1 and resumed
    full = Trainer(method(), Textures(), config(1), out / 'full')
    full.fit()
    q = full.method.objective.queue.keys
    checks['queues_equal'] = same_on_all_ranks(q)
    checks['key_encoders_equal'] = all(same_on_all_ranks(p) for p in full.method.objective.encoder_k.parameters())
    checks['weights_equal'] = all(same_on_all_ranks(p.detach()) for p in full.model.parameters())
    part = Trainer(method(), Textures(), config(0), out / 'part')
    part.fit()
    resumed = Trainer(method(), Textures(), config(1), out / 'part')
    resumed.resume(out / 'part' / 'checkpoints' / 'last.pt').fit()
    checks['resumed_step'] = resumed.step
    if r == 0: (out / 'checks.json').write_text(json.dumps(checks))
    ddp.barrier()


if __name__ == '__main__':
    main(Path(sys.argv[1]))
