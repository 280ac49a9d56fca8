"""A run owns its run.out_dir: a second live run is refused with the holder named, a new run never
replaces an earlier one (resume it, or --overwrite moves it aside), and a killed run's lock is
never in the way."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pada_fast.config import ConfigError, load_config
from pada_fast.train.run_folder import RunFolderBusy, RunLock, prepare_fresh_run
from pada_fast.train.trainer import Trainer


def small_cfg(out, *extra):
    return load_config(None, ["space.C=4", "space.N=1", "optim.epochs=1", "data.batch_size=64",
                              "data.train_subset=128", f"run.out_dir={out}", "run.threads=1",
                              "run.log_interval=1000", "run.progress=lines", "run.device=cpu", *extra])


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_a_second_live_run_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pada_fast.train.run_folder import RunLock
        lock = RunLock({str(tmp_path)!r}).acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunFolderBusy, match=f"in use by another run \\(pid {holder.pid} on "):
            Trainer(small_cfg(tmp_path))
        holder.send_signal(signal.SIGKILL)      # a killed holder's lock goes with it
        holder.wait()
        Trainer(small_cfg(tmp_path)).fit()
    finally:
        if holder.poll() is None:
            holder.kill()


def test_the_lock_is_held_while_training_and_released_after(tmp_path):
    trainer = Trainer(small_cfg(tmp_path))
    with pytest.raises(RunFolderBusy):
        RunLock(tmp_path).acquire()
    trainer.fit()
    RunLock(tmp_path).acquire().release()


def test_a_new_run_never_replaces_an_earlier_one(tmp_path):
    Trainer(small_cfg(tmp_path)).fit()
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match="already holds a run .*--resume.*--overwrite"):
        Trainer(small_cfg(tmp_path, "optim.lr=0.1"))
    assert snapshot(tmp_path) == before                       # nothing touched
    Trainer(small_cfg(tmp_path, "optim.lr=0.1"), overwrite=True).fit()
    moved = [p for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name + ".old-")]
    assert len(moved) == 1 and snapshot(moved[0]) == before   # moved aside, byte for byte
    assert load_config(tmp_path / "config.yaml").optim.lr == 0.1


def test_prepare_fresh_run_ignores_empty_folders(tmp_path):
    assert prepare_fresh_run(tmp_path / "missing") is None
    (tmp_path / "empty").mkdir()
    assert prepare_fresh_run(tmp_path / "empty") is None


def test_the_cli_refuses_and_exits_2(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "pada_fast.cli", "train", "--set", "space.C=4", "--set", "space.N=1",
            "--set", "optim.epochs=1", "--set", "data.train_subset=128", "--set", f"run.out_dir={tmp_path}",
            "--set", "run.progress=lines", "--set", "run.threads=1"]
    assert subprocess.run(args, env=env, capture_output=True).returncode == 0
    again = subprocess.run(args, env=env, capture_output=True, text=True)
    assert again.returncode == 2 and "already holds a run" in again.stderr
    assert subprocess.run(args + ["--overwrite"], env=env, capture_output=True).returncode == 0
