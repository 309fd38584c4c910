from clex.eval.tasks import TASKS, EvalTask


@TASKS.register("harness")
class Harness(EvalTask):
    """lm-evaluation-harness tasks on the patched model (clex/eval/harness.py; the harness extra): harness.json
    with the harness's own output, harness.png; one score per lm-eval task and length (``harness/<task>``)."""

    title = "lm-eval tasks"
    metric = "the task's own metric (harness.json names it)"

    def check(self, options, lengths):
        from clex.eval import harness_tasks

        harness_tasks.check(options, lengths)

    def run(self, cfg, prepared, run_dir):
        from omegaconf import OmegaConf

        from clex.eval.harness import write_harness

        opts = OmegaConf.to_container(cfg.eval.harness)
        lengths = list(opts["lengths"]) if opts.get("lengths") is not None else prepared.eval_lengths
        summary = write_harness(prepared.model, prepared.tokenizer, opts, lengths, run_dir, cfg.strategy.name)
        return {f"harness/{task}": cells for task, cells in summary["score_by_task"].items()}
