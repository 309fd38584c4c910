"""The journal's write lock: Optuna's symlink lock (``X.journal.lock``, a link created atomically, NFS-safe), with
a stale lock broken instead of spun on. Optuna 5.1 retries at once, without sleeping, when ``os.stat`` fails on
its lock (a dangling link, which a killed worker leaves when the link is relative), so a waiting worker spins at
100% CPU forever. Here the lock's age is the link's own (``lstat``), a waiting worker sleeps (backing off to
``MAX_SLEEP``), and a lock older than ``GRACE_SECONDS`` (a killed or stopped holder; no write takes that long) is
broken, saying so. Every reader and writer of a journal opens it through ``journal_storage``."""

import errno
import os
import sys
import time

from optuna.storages.journal import JournalFileSymlinkLock

GRACE_SECONDS = 30.0
MAX_SLEEP = 0.5


class StaleBreakingLock(JournalFileSymlinkLock):
    def __init__(self, filepath: str, grace_seconds: float = GRACE_SECONDS):
        super().__init__(filepath, grace_period=None)
        self.grace_seconds = grace_seconds

    def acquire(self) -> bool:
        sleep = 0.001
        while True:
            try:
                os.symlink(self._lock_target_file, self._lock_file)
                return True
            except OSError as error:
                if error.errno != errno.EEXIST:
                    raise
            try:
                age = time.time() - os.lstat(self._lock_file).st_mtime
            except FileNotFoundError:
                continue  # released meanwhile: take it at once
            if age > self.grace_seconds:
                print(
                    f"the journal lock {self._lock_file} is {age:.0f} s old (a killed or stopped worker's; the grace "
                    f"period is {self.grace_seconds:g} s): breaking it",
                    file=sys.stderr,
                )
                try:
                    self.release()
                except RuntimeError:
                    pass  # another worker broke it first
                continue
            time.sleep(sleep)
            sleep = min(sleep * 2, MAX_SLEEP)


def journal_storage(path):
    """Optuna's storage on the journal file ``path``, under this lock."""
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(str(path), lock_obj=StaleBreakingLock(str(path)))
    return optuna.storages.JournalStorage(backend)
