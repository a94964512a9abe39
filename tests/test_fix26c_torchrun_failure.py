"""author26-6: a failed `infoblocks run --nproc N` printed the clear one-line error (once per
rank) and then ~40 lines of torch's launcher traceback and ChildFailedError table.  Now the
error once and one line naming the file in --out that holds torch's report."""
import argparse
import subprocess
import sys

import numpy as np
import pytest

from infoblocks.recipes import cli

FAKE = r'''
import sys, time
w = sys.stderr.write
w("infoblocks: error: Sampler 'mine' cannot be sharded across 2 processes.\n")
w("infoblocks: error: Sampler 'mine' cannot be sharded across 2 processes.\n")
w("dii:  50%|#####     | 1/2\r"); sys.stderr.flush(); time.sleep(0.05)
w("dii: 100%|##########| 2/2\n")
w("W1201 19:56:46.642000 18883 venv/lib/python3.11/site-packages/torch/distributed/elastic/"
  "multiprocessing/api.py:1028] Sending process 18896 closing signal SIGTERM\n")
w("E1201 19:56:46.715000 18883 venv/lib/python3.11/site-packages/torch/distributed/elastic/"
  "multiprocessing/api.py:1002] failed (exitcode: 2) local_rank: 0 (pid: 18895) of binary: x\n")
w("Traceback (most recent call last):\n" + "  File run.py, line 1\n" * 30)
w("torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n" + "=" * 60 + "\n")
sys.exit(1)
'''


def test_launcher_report_goes_to_a_file(tmp_path, capsys):
    process = subprocess.Popen([sys.executable, "-c", FAKE], stderr=subprocess.PIPE)
    report = cli._pass_stderr(process)
    code = process.wait()
    err = capsys.readouterr().err
    assert err == ("infoblocks: error: Sampler 'mine' cannot be sharded across 2 processes.\n"
                   "dii:  50%|#####     | 1/2\rdii: 100%|##########| 2/2\n")
    assert len(report) == 35 and "ChildFailedError" in "".join(report)
    args = argparse.Namespace(out=str(tmp_path / "out"), nproc=2)
    line = cli._failure_line(args, code, report)
    path = tmp_path / "out" / cli.TORCHRUN_REPORT
    assert line == (f"infoblocks: error: the run in 2 processes failed (exit code 1); the "
                    f"workers' error is above, torch's launcher report is in {path}.")
    assert path.read_text() == "".join(report)


@pytest.mark.slow  # a real 2-process launch: ~30 s
def test_a_failed_nproc_run_ends_in_two_lines(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "A.npy", rng.standard_normal((40, 3)).astype(np.float32))
    np.save(tmp_path / "B.npy", rng.standard_normal((40, 2)).astype(np.float32))
    (tmp_path / "dii.toml").write_text('recipe = "dii"\nepochs = 2\nk_init = 500\n')
    run = subprocess.run([sys.executable, "-m", "infoblocks.recipes.cli", "run",
                          str(tmp_path / "dii.toml"), "--data", str(tmp_path / "A.npy"),
                          "--data", str(tmp_path / "B.npy"), "--out", str(tmp_path / "out"),
                          "--nproc", "2"], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert "Traceback" not in run.stderr and "ChildFailedError" not in run.stderr, run.stderr
    assert len(lines) == 2, run.stderr
    assert lines[0].startswith("infoblocks: error:") and "k" in lines[0]
    assert lines[1].startswith("infoblocks: error: the run in 2 processes failed")
    assert "ChildFailedError" in (tmp_path / "out" / cli.TORCHRUN_REPORT).read_text()


RESTART = r'''
import sys
w = sys.stderr.write
w("E1201 19:56:46.715000 18883 x/torch/distributed/elastic/multiprocessing/api.py:1002] "
  "failed (exitcode: 1) local_rank: 0 (pid: 18895) of binary: x\n")
w("Traceback (most recent call last):\n  File worker.py, line 1\nRuntimeError: boom\n")
w("W1201 19:56:47.000000 18883 x/torch/distributed/elastic/agent/server/api.py:700] "
  "restarting worker group\n")
w("dii: 100%|##########| 2/2\n")
'''


def test_output_after_a_restart_streams_again(capsys):
    # --max-restarts: what the restarted workers print is not held back with torch's report
    process = subprocess.Popen([sys.executable, "-c", RESTART], stderr=subprocess.PIPE)
    report = cli._pass_stderr(process)
    assert process.wait() == 0
    assert capsys.readouterr().err == "dii: 100%|##########| 2/2\n"
    assert len(report) == 5 and "RuntimeError: boom" in "".join(report)
