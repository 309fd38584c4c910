"""comparison.md and one figure for a comma list of runs: the shape of the paper's Table 1."""
from pathlib import Path

from clex import io
from clex.plots import plot_ppl_vs_length


def run_label(result: dict, varying: list[str]) -> str:
    return " ".join(result["choices"][group] for group in varying) or result["strategy"]


def comparison_markdown(results: list[dict], varying: list[str]) -> str:
    lengths = sorted({row["length"] for result in results for row in result["eval"]})
    header = "| run | " + " | ".join(str(n) for n in lengths) + " | extrapolation length |"
    lines = [header, "|---" * (len(lengths) + 2) + "|"]
    for result in results:
        ppl = {row["length"]: row["ppl"] for row in result["eval"]}
        cells = [f"{ppl[n]:.2f}" if ppl.get(n) is not None else "-" for n in lengths]
        ext = result["extrapolation_length"]
        ext_cell = "-" if ext["value"] is None else f"{ext['value']:.0f}" + ("+" if ext["censored"] else "")
        lines.append(f"| {run_label(result, varying)} | " + " | ".join(cells) + f" | {ext_cell} |")
    first = results[0]
    lines += ["", f"Perplexity by evaluation length (tokens); training length L = {first['train_length']}, "
                  f"L0 = {first['original_length']}; {first['eval'][0]['tokens']} tokens scored at L. "
                  "Extrapolation length: largest length with PPL within (1 + eps) of PPL at L "
                  "(+: every evaluated length stayed within). Runs: "
                  + ", ".join(f"`{r['name']}`" for r in results)]
    return "\n".join(lines) + "\n"


def write_comparison(results: list[dict], out_dir: Path, choices: dict) -> str:
    varying = [group for group, options in choices.items() if len(options) > 1]
    target = Path(out_dir) / ("comparison-" + "-".join(run_label(r, varying).replace(" ", "_") for r in results))
    table = comparison_markdown(results, varying)
    io.write_text(target / "comparison.md", table)
    plot_ppl_vs_length(results, target / "ppl_vs_length.png", label_key=lambda r: run_label(r, varying))
    return table + f"saved {target}"
