"""The journal's write lock: a stale lock (a killed worker's, a dangling relative link among them) is broken after
the grace period instead of spun on, a waiting worker sleeps, and a study under such a lock is still read."""

import os
import threading
import time

import optuna

from clex.journal import GRACE_SECONDS, StaleBreakingLock, journal_storage


def planted_lock(journal, age: float, relative: bool = True):
    """The link a killed worker leaves: X.journal.lock -> X.journal (relative: dangling from any other folder)."""
    lock = journal.with_name(journal.name + ".lock")
    os.symlink(journal.name if relative else str(journal), lock)
    then = time.time() - age
    os.utime(lock, (then, then), follow_symlinks=False)
    return lock


def test_a_dangling_stale_lock_is_broken_at_once_and_said(tmp_path, capsys, monkeypatch):
    journal = tmp_path / "s.journal"
    journal.touch()
    monkeypatch.chdir(tmp_path.parent)  # the relative link dangles from here, as Optuna 5.1 then spins forever
    planted_lock(journal, age=GRACE_SECONDS + 5)
    lock = StaleBreakingLock(str(journal))
    start = time.time()
    assert lock.acquire() and time.time() - start < 2
    assert "breaking it" in capsys.readouterr().err
    lock.release()
    assert not os.path.lexists(f"{journal}.lock")


def test_a_waiting_worker_sleeps_and_breaks_the_lock_after_the_grace_period(tmp_path):
    journal = tmp_path / "s.journal"
    journal.touch()
    planted_lock(journal, age=0, relative=False)  # a live-looking lock: wait for the grace period
    cpu, start = time.process_time(), time.time()
    lock = StaleBreakingLock(str(journal), grace_seconds=1.5)
    assert lock.acquire()
    waited, busy = time.time() - start, time.process_time() - cpu
    assert 1.5 <= waited < 4 and busy < 0.5 * waited, (waited, busy)  # a spin burns the whole wait
    lock.release()


def test_a_lock_released_meanwhile_is_taken(tmp_path):
    journal = tmp_path / "s.journal"
    journal.touch()
    held = StaleBreakingLock(str(journal))
    assert held.acquire()
    threading.Timer(0.3, held.release).start()
    start = time.time()
    assert StaleBreakingLock(str(journal)).acquire() and 0.25 < time.time() - start < 2


def test_a_study_under_a_stale_lock_is_read_and_written(tmp_path, monkeypatch):
    journal = tmp_path / "s.journal"
    study = optuna.create_study(study_name="s", storage=journal_storage(journal))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), 2)
    monkeypatch.chdir(tmp_path.parent)
    planted_lock(journal, age=GRACE_SECONDS + 1)
    study = optuna.load_study(study_name="s", storage=journal_storage(journal))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), 1)
    assert len(study.trials) == 3
