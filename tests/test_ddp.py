"""Data parallelism: 2 CPU processes (gloo, torchrun's environment variables) with batch B each make the
same updates as 1 process with the combined batch 2B."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

import train
from test_train import make_cfg, save_tiny_vqvae, write_shards

STEPS = "3"


class ConvDistance(torch.nn.Module):
    """A frozen random conv feature distance standing in for LPIPS (building torchvision's AlexNet costs
    seconds per process; the LPIPS module itself is tested in test_losses/test_train). Same weights in
    every process: [B, 3, H, W] x2 -> [B]."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.w1 = torch.nn.Parameter(torch.randn(8, 3, 3, 3, generator=gen) * 0.3, requires_grad=False)
        self.w2 = torch.nn.Parameter(torch.randn(8, 8, 3, 3, generator=gen) * 0.2, requires_grad=False)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        def feats(x):
            h = torch.relu(torch.nn.functional.conv2d(x, self.w1, stride=2, padding=1))
            return torch.nn.functional.conv2d(h, self.w2, stride=2, padding=1)

        return (feats(x0) - feats(x1)).pow(2).mean(dim=(1, 2, 3))


def _worker(rank: int, world: int, port: int, setup: dict, run_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    cfg = make_cfg(setup, Path(run_dir), "--batch-size", "1", "--max-steps", STEPS, "--ckpt-every", "100",
                   "--device", "cpu")
    result = train.run(cfg, lpips_net=ConvDistance())
    state = {k: v.detach().clone() for k, v in result["trainer"].model.state_dict().items()}
    torch.save({"params": state, "metrics": result["metrics"], "brake": result["trainer"].brake.to_dict()},
               Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process_with_the_combined_batch(tmp_path):
    torch.set_num_threads(1)
    vq_path, ident = save_tiny_vqvae(tmp_path / "vq.pt")
    setup = {"base": tmp_path, "vq": vq_path, "ident": ident, "data": write_shards(tmp_path / "shards", vq_path, ident)}
    single = train.run(make_cfg(setup, tmp_path / "single", "--batch-size", "2", "--max-steps", STEPS,
                                "--ckpt-every", "100"), lpips_net=ConvDistance())
    # fork after the single run: the children reuse its imports (torch._dynamo, which the optimizer pulls
    # in, alone costs seconds in every fresh process)
    mp.start_processes(_worker, args=(2, _free_port(), setup, str(tmp_path / "ddp"), str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    ref = single["trainer"].model.state_dict()
    changed = 0
    for k, v in ref.items():
        torch.testing.assert_close(ranks[0]["params"][k], ranks[1]["params"][k], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0]["params"][k], v, rtol=1e-4, atol=1e-6)
    init = train.Trainer(single["trainer"].cfg, single["trainer"].vqvae, str(vq_path), ident,
                         single["trainer"].encoding, torch.device("cpu"), lpips_net=ConvDistance()).model
    for k, v in init.state_dict().items():
        changed += int(not torch.equal(v, ref[k]))
    assert changed > 10  # the runs really trained
    assert ranks[0]["brake"] == single["trainer"].brake.to_dict()
    for key in ("loss", "ce", "lpips", "idm"):
        assert abs(ranks[0]["metrics"][key] - single["metrics"][key]) < 1e-4 * max(1.0, abs(single["metrics"][key]))
    # Only rank 0 writes the run directory.
    assert (tmp_path / "ddp" / "world_model.pt").is_file()
