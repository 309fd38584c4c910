from clex.eval.tasks import TASKS, EvalTask


@TASKS.register("passkey")
class Passkey(EvalTask):
    """Passkey retrieval over a length x depth grid (clex/eval/passkey.py): passkey.json, passkey.png and every
    answer in passkey_samples.jsonl."""

    title = "Passkey retrieval"
    metric = "accuracy (mean over depths)"

    def check(self, options, lengths):
        from clex.eval.ruler import check_depths

        check_depths("eval.passkey.depths", options.get("depths"))

    def run(self, cfg, prepared, run_dir):
        from clex import io
        from clex.eval.passkey import passkey_grid, plot_passkey
        from clex.eval.tasks import write_samples

        p = cfg.eval.passkey
        lengths = [m * cfg.train.length for m in p.multipliers]
        samples = []
        rows = passkey_grid(
            prepared.model,
            prepared.tokenizer,
            lengths,
            list(p.depths),
            p.trials,
            cfg.eval.seed,
            cfg.eval.chunk_size,
            samples,
        )
        io.write_json(run_dir / "passkey.json", {"strategy": cfg.strategy.name, "rows": rows})
        write_samples(run_dir / "passkey_samples.jsonl", samples)
        plot_passkey(rows, run_dir / "passkey.png", f"passkey retrieval: {cfg.strategy.name}")
        return {"passkey": {n: sum(r["accuracy"] for r in rows if r["length"] == n) / len(p.depths) for n in lengths}}
