"""``pairstream worker``'s start-up checks: a bad setting is said at once, not minutes later."""

import os
import subprocess
import sys


def test_a_typo_in_the_training_options_stops_the_worker_at_start_with_the_reason(tmp_path):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PAIRSTREAM_")},
           "PAIRSTREAM_DATA_DIR": str(tmp_path), "PAIRSTREAM_TRAINING_ARGS": "--epochs two"}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "PAIRSTREAM_TRAINING_ARGS" in done.stderr and "--epochs" in done.stderr, done.stderr
    assert not (tmp_path / "tansu.log").exists()  # refused before anything was started
