"""Many workers on one study, for real: a throwaway PostgreSQL server (Debian's postgresql package; .ci/run
installs it where it is missing), started as an unprivileged user on a free port and stopped at the end. Three
workers share a study there, one is killed with SIGKILL mid-trial, the study reaches its
count with the dead trial retried from its own run folder, and a fourth process reads --summary. (A journal file
runs the same scenario with two workers: tests/test_sweeps.py::test_a_killed_worker_trial_is_failed_and_retried.)"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from clex.commands import sweep as sweep_cli
from clex.journal import journal_storage
from tests.test_sweeps import TINY as SWEEP_TINY
from tests.test_sweeps import WORKER

TINY = [*SWEEP_TINY, "train.val_every=5"]
TRIALS = 3


def server_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server of its own (the server refuses root: run as nobody when we are root)."""
    binaries = server_binaries()
    if binaries is None:
        if os.environ.get("CLEX_REQUIRE_POSTGRES"):
            pytest.fail("no PostgreSQL server binaries, though .ci/run installs them")
        pytest.skip("no PostgreSQL server here (apt-get install postgresql)")
    folder = tempfile.mkdtemp(prefix="clex-pg-", dir="/tmp")
    run_as = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(folder, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = f"{folder}/data"

    def pg(*args):
        done = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=120, **run_as)
        assert done.returncode == 0, done.stdout + done.stderr

    pg(binaries / "initdb", "-D", data, "-U", "clex", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    pg(binaries / "pg_ctl", "-D", data, "-l", f"{folder}/log", "-o", options, "-w", "start")
    try:
        yield f"postgresql+psycopg2://clex@127.0.0.1:{port}/postgres"
    finally:
        pg(binaries / "pg_ctl", "-D", data, "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def storage_of(kind: str, tmp_path, postgres_url: str) -> str:
    return str(tmp_path / "study.journal") if kind == "journal" else postgres_url


def worker_args(tmp_path, storage, name):
    options = [f"study.n_trials={TRIALS}", "study.pruner=none", "study.heartbeat_interval=1", "study.grace_period=5"]
    return [
        "sweep=clex_lambda",
        f"study.name={name}",
        f"study.storage={storage}",
        f"out_dir={tmp_path / 'runs'}",
        "train.steps=80",
        *options,
        *TINY,
    ]


def load(storage: str, name: str):
    backend = storage if "://" in storage else journal_storage(storage)
    return optuna.load_study(study_name=name, storage=backend)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["postgresql"])  # the journal's: tests/test_sweeps.py (above)
def test_three_workers_one_killed_mid_trial_the_study_reaches_its_count(kind, tmp_path, request):
    storage = storage_of(kind, tmp_path, request.getfixturevalue("postgres_url") if kind == "postgresql" else "")
    name = f"cluster_{kind}_{os.getpid()}"
    start = lambda: subprocess.Popen(  # noqa: E731
        [sys.executable, WORKER, *worker_args(tmp_path, storage, name)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    victim = start()
    deadline, killed = time.time() + 240, None
    while time.time() < deadline and killed is None:  # kill it while a trial of its has run (and beaten) 1.5 s
        time.sleep(0.2)
        try:
            trials = load(storage, name).get_trials()
        except (KeyError, optuna.exceptions.StorageInternalError, FileNotFoundError, ValueError):
            continue
        now = time.time()
        if any(t.state == TrialState.RUNNING and now - t.datetime_start.timestamp() > 1.5 for t in trials):
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            running = [t for t in load(storage, name).get_trials() if t.state == TrialState.RUNNING]
            killed = running[0].number if running else None  # none: it finished that trial just before
            if killed is None:
                victim = start()
    assert killed is not None, "the first worker never ran a trial long enough to be killed in it"
    others = [start(), start()]
    outputs = [w.communicate(timeout=600)[0] for w in others]
    assert all(w.returncode == 0 for w in others), outputs
    trials = load(storage, name).get_trials()
    assert trials[killed].state == TrialState.FAIL
    # its retry (a retry a loaded machine declared dead too is retried again: the last one completes)
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert retries and all(t.params == trials[killed].params for t in retries)
    [retried] = [t for t in retries if t.state == TrialState.COMPLETE]
    assert retried.user_attrs["run_dir"].endswith(f"trial{killed:04d}")  # the dead trial's own run folder
    assert [t.state for t in trials].count(TrialState.COMPLETE) == TRIALS
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    summary = subprocess.run(  # a fourth process
        [sys.executable, WORKER, *worker_args(tmp_path, storage, name), "--summary"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert summary.returncode == 0 and f"complete {TRIALS}" in summary.stdout, summary.stdout + summary.stderr


@pytest.mark.parametrize("url", ["notaurl://x", "sqlite:////proc/nope.db", "/proc/self/x.journal"])
def test_a_malformed_storage_is_one_line_and_exit_2(url, tmp_path, capsys):
    assert sweep_cli.main(["sweep=clex_lambda", f"study.storage={url}", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "study.storage" in err and len(err.splitlines()) == 1, err


def test_a_folder_as_storage_is_one_line_and_exit_2(tmp_path, capsys):
    assert sweep_cli.main(["sweep=clex_lambda", f"study.storage={tmp_path}", f"out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "study.storage" in err and len(err.splitlines()) == 1, err
