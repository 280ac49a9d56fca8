"""What a careful new user tries, each as a subprocess of the CLI: the exit code of the failure's
kind, one line on standard error (no traceback unless --debug), and every earlier run folder and
checkpoint byte-identical afterwards."""
import os
import signal
import subprocess
import sys
from pathlib import Path


TINY = ["--set", "space.C=4", "--set", "space.N=1", "--set", "optim.epochs=1", "--set", "data.train_subset=128",
        "--set", "data.batch_size=64", "--set", "run.progress=lines", "--set", "run.threads=1",
        "--set", "run.log_interval=1000"]


def cli(*args, env=None, preexec=None, timeout=300):
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pada_fast.cli", *args], env=full_env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=preexec)


def train(out, *extra, **kw):
    return cli("train", *TINY, "--set", f"run.out_dir={out}", *extra, **kw)


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def one_line_error(result, code: int, *phrases: str) -> str:
    assert result.returncode == code, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.startswith("pada-fast: ")]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def test_a_second_run_on_a_busy_folder_is_refused(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "pada_fast.cli", "train", *TINY, "--set", f"run.out_dir={out}"],
                             env={**os.environ, "OMP_NUM_THREADS": "1", "PADA_FAST_FAULT_STEP": "1",
                                  "PADA_FAST_FAULT_MODE": "hang"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    try:
        for line in first.stderr:              # the first run is inside its epoch, holding the folder
            if "hangs at step 1" in line:
                break
        before = snapshot(out)
        second = train(out, "--overwrite")
        one_line_error(second, 2, "in use by another run", f"pid {first.pid}")
        assert snapshot(out) == before
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert train(out, "--overwrite").returncode == 0       # a killed run's lock is not in the way


def test_a_new_run_into_a_finished_one_is_refused_or_moved_aside(tmp_path):
    out = tmp_path / "run"
    assert train(out).returncode == 0
    before = snapshot(out)
    one_line_error(train(out, "--set", "optim.lr=0.1"), 2, "already holds a run", "--resume", "--overwrite")
    assert snapshot(out) == before
    assert train(out, "--set", "optim.lr=0.1", "--overwrite").returncode == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(aside) == 1 and snapshot(aside[0]) == before


def test_scientific_notation_is_a_float(tmp_path):
    result = train(tmp_path / "run", "--set", "optim.lr=1e-3", "--set", "optim.weight_decay=5E-4")
    assert result.returncode == 0, result.stderr


def test_a_foreign_checkpoint_copied_over_checkpoint_pt_is_named_and_kept(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    assert train(run, "--set", "run.checkpoint_every_steps=1").returncode == 0
    made = train(other, "--set", "space.name=darts", "--set", "space.C=2", "--set", "space.num_cells=2",
                 "--set", "data.train_subset=64")          # a supernet of another search space
    assert made.returncode == 0, made.stderr
    foreign = (other / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").unlink()
    (run / "checkpoint.pt").write_bytes(foreign)
    older = cli("train", *TINY, "--set", f"run.out_dir={run}", "--set", "optim.epochs=2", "--resume")
    assert older.returncode == 0, older.stderr
    assert "checkpoint.pt is not used" in older.stderr
    kept = [p for p in run.iterdir() if p.name.startswith("checkpoint.pt.not-used-")]
    assert len(kept) == 1 and kept[0].read_bytes() == foreign


def test_unexpected_failures_are_one_line_and_debug_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.pt"
    result = cli("rank", str(missing), "--out", str(tmp_path / "rank"))
    one_line_error(result, 3, "no checkpoint at", str(missing))
    debug = cli("--debug", "rank", str(missing), "--out", str(tmp_path / "rank"))
    assert debug.returncode == 3 and "Traceback" in debug.stderr
    assert "Traceback" in cli("rank", str(missing), "--out", str(tmp_path / "r"),
                              env={"PADA_FAST_DEBUG": "1"}).stderr


def test_a_corrupt_only_checkpoint_is_a_checkpoint_error(tmp_path):
    out = tmp_path / "run"
    assert train(out).returncode == 0
    for p in out.glob("checkpoint*.pt"):
        p.write_bytes(p.read_bytes()[:100])
    before = snapshot(out)
    one_line_error(train(out, "--resume"), 4, "no usable checkpoint")
    assert snapshot(out) == before


NAN_LOGITS = ("import sys; from pada_fast.spaces.nb201 import NB201SuperNet as Net; forward = Net.forward; "
              "Net.forward = lambda self, x, arch: forward(self, x, arch) * float('nan'); "
              "from pada_fast.cli import main; sys.exit(main(sys.argv[1:]))")


def test_non_finite_training_is_a_numeric_error(tmp_path):
    result = subprocess.run([sys.executable, "-c", NAN_LOGITS, "train", *TINY, "--set", f"run.out_dir={tmp_path}",
                             "--set", "run.nonfinite_max_consecutive=0"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    one_line_error(result, 6, "not finite")


def _limit_file_size(limit):
    def apply():
        import resource
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # writes past the limit then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_disk_full_while_checkpointing_names_the_intact_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert train(out).returncode == 0
    size = (out / "checkpoint.pt").stat().st_size
    before = {p.name: p.read_bytes() for p in out.glob("checkpoint*.pt")}
    result = cli("train", *TINY, "--set", f"run.out_dir={out}", "--set", "optim.epochs=2", "--resume",
                 preexec=_limit_file_size(size // 2))
    line = one_line_error(result, 7, "no space left on", "checkpoint-e0001-s000000.pt is intact")
    assert str(out) in line
    assert {p.name: p.read_bytes() for p in out.glob("checkpoint*.pt")} == before
    assert not list(out.glob("*.tmp"))


def test_rank_after_the_data_moved_names_data_root(tmp_path):
    import shutil
    data = tmp_path / "data"
    for split, n in (("train", 12), ("test", 4)):
        for cls in ("a", "b"):
            folder = data / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                from PIL import Image
                Image.new("RGB", (8, 8), (i * 20, 0, 0) if cls == "a" else (0, i * 20, 0)).save(folder / f"{i}.png")
    out = tmp_path / "run"
    assert train(out, "--set", "data.dataset=cifar10_folder", "--set", f"data.root={data}",
                 "--set", "data.train_subset=null", "--set", "data.batch_size=8").returncode == 0
    shutil.move(data, tmp_path / "moved")
    result = cli("rank", str(out / "checkpoint.pt"), "--out", str(tmp_path / "rank"),
                 "--ground-truth", str(Path(__file__).resolve().parents[1] / "pada_fast" / "data" / "ground_truth" / "nb201_digits.json"))
    one_line_error(result, 3, "not at", "--data-root")


def test_the_non_finite_advice_is_true(tmp_path):
    out = tmp_path / "run"
    assert train(out, "--set", "data.train_subset=256", "--set", "optim.epochs=1").returncode == 0
    result = subprocess.run([sys.executable, "-c", NAN_LOGITS, "train", *TINY, "--set", f"run.out_dir={out}",
                             "--set", "data.train_subset=256", "--set", "optim.epochs=2", "--resume",
                             "--set", "run.nonfinite_max_consecutive=0"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    one_line_error(result, 6, "not finite", "checkpoint-e0001-s000000.pt", "--resume", "optim.lr")
    lower = train(out, "--set", "data.train_subset=256", "--set", "optim.epochs=2", "--resume",
                  "--set", "optim.lr=0.01")          # the advice: a lower learning rate, resumed
    assert lower.returncode == 0, lower.stderr
    assert "resuming with optim.lr changed: 0.05 -> 0.01" in lower.stdout


def test_a_first_epoch_failure_says_no_checkpoint_exists(tmp_path):
    result = subprocess.run([sys.executable, "-c", NAN_LOGITS, "train", *TINY, "--set", f"run.out_dir={tmp_path}",
                             "--set", "run.nonfinite_max_consecutive=0"], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    one_line_error(result, 6, "No checkpoint of this run was written yet", "--overwrite")


def test_an_unreadable_ground_truth_table_is_a_ground_truth_error(tmp_path):
    out = tmp_path / "run"
    assert train(out).returncode == 0
    table = tmp_path / "table.json"
    table.write_text('{"not": "a table"}')
    result = cli("rank", str(out / "checkpoint.pt"), "--out", str(tmp_path / "rank"), "--ground-truth", str(table))
    one_line_error(result, 5, str(table))


def _image_tree(root: Path, names_per_class: dict) -> None:
    from PIL import Image
    for split in ("train", "test"):
        for cls, names in names_per_class.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i, name in enumerate(names):
                path = os.path.join(os.fsencode(folder), name)
                Image.new("RGB", (8, 8), (i * 30, 10, 0)).save(path.decode("utf-8", "surrogateescape"), format="PNG")


def test_file_names_that_are_not_utf8_are_read_and_reported(tmp_path):
    data = tmp_path / "data"
    _image_tree(data, {"a": [b"\xff\xfe-odd.png"] + [f"{i}.png".encode() for i in range(5)],
                       "b": [f"{i}.png".encode() for i in range(6)]})
    sets = ["--set", "data.dataset=cifar10_folder", "--set", f"data.root={data}", "--set", "data.train_subset=null",
            "--set", "data.batch_size=4"]
    ok = train(tmp_path / "run", *sets)                   # bad_files=error: the odd name is a valid image
    assert ok.returncode == 0, ok.stderr
    broken = os.path.join(os.fsencode(data / "train" / "b"), b"\xe9t\xe9-broken.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG not really")
    skip = train(tmp_path / "skip", *sets, "--set", "data.bad_files=skip")
    assert skip.returncode == 0, skip.stderr
    report = (tmp_path / "skip" / "skipped_files.txt").read_text()
    assert "\\xe9t\\xe9-broken.png: unreadable" in report
    failed = train(tmp_path / "error", *sets)
    one_line_error(failed, 3, "\\xe9t\\xe9-broken.png", "bad_files=skip")


def test_a_broken_image_mid_epoch_keeps_the_work_and_verify_data_lists_it(tmp_path):
    data = tmp_path / "data"
    _image_tree(data, {"a": [f"{i}.png".encode() for i in range(16)], "b": [f"{i}.png".encode() for i in range(16)]})
    (data / "train" / "b" / "9.png").write_bytes(b"")           # empty: found only when it is read
    sets = ["--set", "data.dataset=cifar10_folder", "--set", f"data.root={data}", "--set", "data.train_subset=null",
            "--set", "data.batch_size=4"]         # seed 0 draws 31 (b/9.png) at stream position 17: step 5
    out = tmp_path / "run"
    failed = train(out, *sets)
    line = one_line_error(failed, 3, "9.png", "data.bad_files=skip", "pada-fast verify-data", "--resume")
    assert (out / "checkpoint-e0000-s000004.pt").exists(), line      # the four finished steps were saved
    listed = cli("verify-data", *sets, "--workers", "2")
    assert listed.returncode == 3 and f"{data / 'train' / 'b' / '9.png'}: " in listed.stdout
    assert "train: 1 of 32 images unreadable" in listed.stdout and "test: 0 of 32" in listed.stdout
    from PIL import Image
    Image.new("RGB", (8, 8)).save(data / "train" / "b" / "9.png")
    assert cli("verify-data", *sets).returncode == 0
    resumed = train(out, *sets, "--resume")
    assert resumed.returncode == 0 and "resumed from" in resumed.stdout, resumed.stderr
