"""A run killed with SIGKILL mid-training resumes to exactly the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from seqlab.train.config import load_config
from seqlab.train.run import train

OVERRIDES = [
    "model.hidden_size=8", "data.length=6", "data.train_size=512", "data.valid_size=16",
    "data.test_size=16", "trainer.batch_size=8", "trainer.max_steps=400", "trainer.eval_every=50",
    "trainer.save_every=7", "trainer.progress=false", "trainer.log_every=5",
]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "seqlab", "train", "adding-lstm", *OVERRIDES, "--run-dir", str(killed)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    sidecar = killed / "checkpoint" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if sidecar.exists() and json.loads(sidecar.read_text())["step"] >= 14:
            break
        time.sleep(0.02)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    step_at_kill = json.loads(sidecar.read_text())["step"]
    assert step_at_kill < 400 and not (killed / "summary.json").exists()

    config = load_config("adding-lstm", OVERRIDES)
    resumed = train(config, killed, resume=True)
    whole = train(config, tmp_path / "whole")
    assert resumed.summary["valid"] == whole.summary["valid"]
    assert resumed.summary["test"] == whole.summary["test"]
    assert resumed.fit.best_step == whole.fit.best_step
