"""Several processes, one sweep worker: rank 0 alone talks to Optuna and hands each trial's
point (its values, its run number and seed) to the other data-parallel ranks, which may live on other nodes."""

import json
import os
from datetime import timedelta

TRIAL_ENV = "CLEX_SWEEP_TRIAL"


def srun_rank() -> int | None:
    """The global rank when SLURM's srun started every rank of this worker (trials that span nodes),
    else None (one process, or ranks that Lightning's launcher starts later)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect() or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return None
    return int(os.environ["SLURM_PROCID"])


class TrialChannel:
    """How rank 0, alone talking to Optuna, hands each trial's point (None: stop) to the other
    ranks of a data-parallel worker. Once a trial has set up the process group: by broadcast. Before
    that, through the environment, which Lightning's launcher copies into the ranks it starts; or,
    when srun started every rank on several nodes, through a TCP store rank 0 hosts beside
    Lightning's master port (``store_timeout``: the longest a rank waits for its next trial)."""

    def __init__(self, rank: int | None = None, store_timeout: float = 24 * 3600):
        import torch.distributed as dist
        from lightning.fabric.plugins.environments import SLURMEnvironment

        self.store, self.count = None, 0
        if rank is not None:
            env = SLURMEnvironment()
            self.store = dist.TCPStore(
                env.main_address,
                env.main_port + 1,
                env.world_size(),
                rank == 0,
                timeout=timedelta(seconds=store_timeout),
            )

    @staticmethod
    def _group():
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def send(self, message):
        import torch.distributed as dist

        if self._group():
            dist.broadcast_object_list([message], src=0)
        else:
            os.environ[TRIAL_ENV] = json.dumps(message)
            if self.store is not None:
                self.store.set(f"trial/{self.count}", json.dumps(message))
        self.count += 1

    def receive(self):
        import torch.distributed as dist

        if self._group():
            box = [None]
            dist.broadcast_object_list(box, src=0)
            message = box[0]
        elif self.store is not None:
            message = json.loads(self.store.get(f"trial/{self.count}"))
        else:
            message = json.loads(os.environ[TRIAL_ENV])
        self.count += 1
        return message

    def close(self):
        """Shut the process group and the store down before the interpreter exits: their threads, still
        running at exit, can abort the process ("terminate called without an active exception")."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        self.store = None
