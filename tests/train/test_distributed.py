"""Data-parallel training with two CPU processes under torchrun (gloo), and the sharding rules."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from seqlab.tasks.base import shard_batches
from seqlab.train.distributed import DistContext, resolve_device, setup_distributed


def test_shards_are_disjoint_and_equal_in_length():
    batches = [[i] for i in range(7)]
    shards = [shard_batches(batches, rank, 2) for rank in (0, 1)]
    assert shards == [[[0], [2], [4]], [[1], [3], [5]]]
    assert shard_batches(batches, 0, 1) == batches


def test_single_process_context(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = setup_distributed("cpu")
    assert context == DistContext(device=torch.device("cpu"))
    assert context.is_main and not context.enabled
    assert context.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    assert context.any(True) and not context.any(False)
    model = torch.nn.Linear(2, 2)
    assert context.wrap(model) is model
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not installed")
def test_torchrun_two_cpu_processes(tmp_path):
    run_dir = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "seqlab", "train", "adding-lstm", "model.hidden_size=8", "data.length=6",
        "data.train_size=64", "data.valid_size=16", "data.test_size=16", "trainer.batch_size=8",
        "trainer.max_steps=6", "trainer.eval_every=3", "trainer.progress=false", "trainer.device=cpu",
        "--run-dir", str(run_dir),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["run"]["world_size"] == 2 and summary["run"]["steps"] == 6
    # Only rank 0 printed the result and wrote the files (no duplicated lines in the log).
    assert result.stdout.count("run directory:") == 1
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], r["split"]) for r in records]
    assert keys == sorted(set(keys), key=keys.index)  # each (step, split) written once, in order
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6]
