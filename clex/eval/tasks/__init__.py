"""Evaluation tasks beside perplexity, behind a registry. A task is one module here plus one YAML under
configs/eval/ that sets ``eval.<name>`` to its options; ``eval.<name>: null`` (the default) leaves it out.

A task declares its option checks (``check``, before anything runs), how it runs on the patched model (``run``,
which writes its own files into the run folder and returns its scores), what its scores are (``metric``) and its
section title. Every task's scores take one shape, ``{task: {length: score}}`` (a task may report sub-tasks as
``name/sub``; length "all" for a score without one), stored in results.json under ``tasks`` with the metrics
under ``task_metrics``; the printed table, collect's TABLE_tasks.csv, compare's comparison.md and sweep
objectives (``<task>@<k>``) read only that.
"""

from clex.registry import Registry

TASKS = Registry("evaluation task", __name__)


class EvalTask:
    """One evaluation task; subclasses set ``title`` and ``metric`` and implement ``run``."""

    name = ""  # set by TASKS.register: the key under eval and in results.json's tasks
    title = ""  # the heading of its table in comparison.md and the printed summary
    metric = ""  # what a score is, e.g. "accuracy (mean over depths)"

    def check(self, options: dict, lengths: list[int]):
        """``eval.<name>`` before anything runs: a ConfigError naming the key and what it allows."""

    def run(self, cfg, prepared, run_dir) -> dict[str, dict[str, float]]:
        """Runs on ``prepared.model`` (patched, on its device), writes its files into ``run_dir``, returns
        ``{task: {length: score}}``."""
        raise NotImplementedError


def chosen(eval_cfg) -> list[EvalTask]:
    """The tasks whose ``eval.<name>`` is set, in name order."""
    return [TASKS.get(name)() for name in TASKS.names() if eval_cfg.get(name)]


def check_tasks(eval_cfg, lengths: list[int]):
    from omegaconf import OmegaConf

    for task in chosen(eval_cfg):
        task.check(OmegaConf.to_container(eval_cfg[task.name]), lengths)


def run_tasks(cfg, prepared, run_dir) -> tuple[dict, dict]:
    """Every chosen task on the prepared model: (scores {task: {length: score}}, metrics {task: metric})."""
    scores, metrics = {}, {}
    for task in chosen(cfg.eval):
        for name, by_length in task.run(cfg, prepared, run_dir).items():
            scores[name] = {str(n): float(s) for n, s in by_length.items()}
            metrics[name] = task.metric
    return scores, metrics


def title(name: str) -> str:
    """A task's section title: its registered title (a sub-task: its parent's, named), else its name."""
    parent, _, sub = name.partition("/")
    if parent not in TASKS.names():
        return name
    own = TASKS.get(parent).title
    return f"{own}: {sub}" if sub else own


def write_samples(path, samples: list[dict]):
    """Every sample of a retrieval task, one JSON line each (a failed cell can be read, not only counted)."""
    import json

    from clex import io

    io.write_text(path, "".join(json.dumps(sample) + "\n" for sample in samples))
