"""DistributedDataParallel through torchrun on the CPU (gloo): with the same global batch and seed, 2 processes
train as 1 does (to floating-point tolerance), only rank 0 logs and writes, and a batch the world size does not
divide is a clean error. Each torchrun costs a few seconds of process start-up."""
import json
import os
import subprocess
import sys

import pytest
import torch

from tempattn.models import __main__ as models_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
RUNS = {
    # the MoE's gate noise is drawn per process and its load-balancing loss is a batch statistic: both off
    "tsa": ["tsa", "--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "16",
            "--n-accounts", "300", "--d-model", "16", "--seed", "3", "--gate-noise", "0", "--balance-weight", "0"],
    "char_lm": ["char_lm", "--dataset", "synthetic", "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "8",
                "--context", "16", "--embed-dim", "16", "--num-heads", "2", "--num-layers", "1", "--dropout", "0",
                "--max-eval-chars", "2000", "--sample-chars", "8", "--backend", "cpu", "--seed", "3"],
}


def torchrun(argv, nproc=2):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "tempattn.models", *argv, "--threads", "1", "--quiet"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("family", list(RUNS))
def test_two_processes_match_one(family, tmp_path):
    two = torchrun([*RUNS[family], "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-3000:]
    assert sum(line.startswith("epoch 1/2") for line in two.stdout.splitlines()) == 1  # rank 0 only
    assert models_cli.main([*RUNS[family], "--quiet", "--threads", "1", "--out", str(tmp_path / "one")]) == 0
    one_m, two_m = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    for a, b in zip(one_m["epochs"], two_m["epochs"]):
        assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in b.items() if k != "seconds"}, rel=1e-5, abs=1e-6)
    split = one_m["final_split"]
    assert one_m["final"][split] == pytest.approx(two_m["final"][split], rel=1e-5, abs=1e-6)
    one_w, two_w = (torch.load(tmp_path / d / "model.pt", weights_only=True)["state_dict"] for d in ("one", "two"))
    for name in one_w:
        a, b = one_w[name], two_w[name]
        if name.endswith(("in_proj_bias", "in_proj.bias")):
            # the key third of the bias shifts every score of a row equally: its true gradient is 0, and AdamW turns
            # the rounding noise left there into lr-sized steps of either sign; compare the query and value thirds
            third = a.shape[0] // 3
            a, b = torch.cat([a[:third], a[2 * third:]]), torch.cat([b[:third], b[2 * third:]])
        # atol: an element whose gradient is at rounding level in some step (~1e-10, e.g. in the output bias
        # of an expert the router sends almost nothing) moves by lr * g / eps under AdamW, so the two runs'
        # reduction orders leave it up to ~1e-5 apart (measured: 1.4e-5); the other elements agree to ~3e-7
        torch.testing.assert_close(a, b, rtol=1e-4, atol=3e-5, msg=lambda m: f"{name}: {m}")
    assert sorted(p.name for p in (tmp_path / "two" / "checkpoints").iterdir()) == ["best.pt", "last.pt"]


def test_a_batch_the_world_size_does_not_divide_is_a_clean_error(tmp_path):
    argv = [*RUNS["tsa"][:-4], "--batch-size", "15", "--epochs", "1", "--out", str(tmp_path)]
    run = torchrun(argv)
    assert run.returncode != 0
    assert "--batch-size 15 is not divisible by the world size 2" in run.stderr
    # each worker exits with the message alone (torchrun then reports the failed workers in its own words)
    worker_lines = [line for line in run.stderr.splitlines() if "not divisible" in line]
    assert worker_lines and all(line.startswith(("python -m tempattn.models: error:", "[rank"))
                                for line in worker_lines)
    assert not (tmp_path / "metrics.json").exists()
