"""``pairstream bench threads``: a tiny-teacher epoch idle and beside busy processes, with the
training child's thread settings against torch's own defaults, in one run.

Each measurement is a fresh child process (thread pools are sized at import) that builds the
CPU default teacher (``Teacher.build`` with no path: the tiny Qwen2) and fits one epoch on
synthetic soft-labelled pairs; ``--busy`` other processes spin on a core each meanwhile. Two
settings:

- ``torch_defaults``: what a child got before: every core, OpenMP's active wait;
- ``all_cores_passive``: every core, passive waits (the pool size kept, the spinning gone);
- ``child_defaults``: what the launcher gives it now (``streams.core.lifeline``): every usable
  core but one, passive waits.

The figure that matters is each setting's busy/idle ratio (how much a busy machine slows a
training run), and the busy epoch of the child's settings against torch's in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from streams.core.lifeline import child_environment, training_threads, usable_cores

EPOCH = """
import json, sys, tempfile, time
from types import SimpleNamespace
import numpy as np
import torch
threads = int(sys.argv[1])
if threads:
    torch.set_num_threads(threads)
from training.teacher import Teacher
rng = np.random.default_rng(0)
words = ["phone", "case", "red", "blue", "charger", "usb-c", "console", "game", "lens", "mount"]
def example():
    target = rng.dirichlet(np.ones(10)).astype(np.float32)
    return SimpleNamespace(fields_a=None, fields_b=None, weight=1.0, target=target,
                           text_a=" ".join(rng.choice(words, 8)), text_b=" ".join(rng.choice(words, 8)))
train = [example() for _ in range(int(sys.argv[2]))]
with tempfile.TemporaryDirectory() as tmp:
    teacher = Teacher.build(None, tmp, max_length=48)
    started = time.perf_counter()
    teacher.fit(train, epochs=1, batch_size=16)
    print(json.dumps({"epoch_s": time.perf_counter() - started, "threads": torch.get_num_threads()}))
"""

BURN = "while True: pass"


def _epoch(env: dict, threads: int, rows: int) -> dict:
    done = subprocess.run([sys.executable, "-c", EPOCH, str(threads), str(rows)], env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    rows = args.rows
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                                "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    settings = {
        "torch_defaults": (base, 0),
        "all_cores_passive": ({**base, **child_environment(usable_cores())}, usable_cores()),
        "child_defaults": ({**base, **child_environment(training_threads(0))}, training_threads(0)),
    }
    spinning = args.busy or 2  # --busy alone (or absent): two
    out: dict = {"usable_cores": usable_cores(), "busy_processes": spinning, "rows": rows}
    for name, (env, threads) in settings.items():
        out[f"{name}_idle_s"] = round(_epoch(env, threads, rows)["epoch_s"], 2)
        burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(spinning)]
        try:
            time.sleep(0.5)
            measured = _epoch(env, threads, rows)
        finally:
            for burner in burners:
                burner.kill()
                burner.wait()
        out[f"{name}_busy_s"] = round(measured["epoch_s"], 2)
        out[f"{name}_threads"] = measured["threads"]
        out[f"{name}_busy_over_idle"] = round(out[f"{name}_busy_s"] / out[f"{name}_idle_s"], 2)
        print(f"{name}: {measured['threads']} threads, epoch idle {out[f'{name}_idle_s']} s, beside "
              f"{spinning} busy processes {out[f'{name}_busy_s']} s ({out[f'{name}_busy_over_idle']}x)")
    out["busy_speedup"] = round(out["torch_defaults_busy_s"] / out["child_defaults_busy_s"], 2)
    print(f"beside busy processes the child's settings run the epoch {out['busy_speedup']}x as fast as torch's")
    return out
