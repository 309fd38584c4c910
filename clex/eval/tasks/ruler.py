from clex.eval.tasks import TASKS, EvalTask


@TASKS.register("ruler")
class Ruler(EvalTask):
    """RULER-style tasks cut from the test split (clex/eval/ruler.py): ruler.json, ruler.png and every answer in
    ruler_samples.jsonl; the mean over the tasks that fit each length (``ruler``) and each task (``ruler/<task>``)."""

    title = "RULER-style tasks"
    metric = "exact-match accuracy (mean over depths; ruler: over the tasks that fit)"

    def check(self, options, lengths):
        from clex.eval.ruler import check_options

        check_options(options)

    def run(self, cfg, prepared, run_dir):
        from omegaconf import OmegaConf

        from clex import io
        from clex.eval.ruler import plot_ruler, ruler_grid, summarise
        from clex.eval.tasks import write_samples

        opts = cfg.eval.ruler
        lengths = list(opts.lengths) if opts.lengths is not None else prepared.eval_lengths
        samples = []
        rows = ruler_grid(
            prepared.model,
            prepared.tokenizer,
            prepared.corpus.documents["test"],
            lengths,
            opts,
            cfg.eval.seed,
            cfg.eval.chunk_size,
            samples,
        )
        write_samples(run_dir / "ruler_samples.jsonl", samples)
        summary = summarise(rows)
        protocol = {k: v for k, v in OmegaConf.to_container(opts).items() if k != "lengths"}
        protocol |= {
            "seed": cfg.eval.seed,
            "decoding": "greedy, 2 x the reference answer's tokens + 8, up to its first line",
            "match": "every expected string as a whole word, any case",
        }
        record = {"strategy": cfg.strategy.name, "tasks": list(opts.tasks), "lengths": lengths, "protocol": protocol}
        io.write_json(run_dir / "ruler.json", {**record, "rows": rows, **summary})
        plot_ruler(rows, run_dir / "ruler.png", f"RULER-style tasks: {cfg.strategy.name}")
        return {"ruler": summary["accuracy_by_length"]} | {
            f"ruler/{task}": cells for task, cells in summary["accuracy_by_task"].items()
        }
