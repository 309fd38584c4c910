"""The miniature report's section 5: each of the paper's claims beside what the miniature's runs show, with a
verdict read from a paired 95% interval over seeds (holds, does not hold, not resolved at this n)."""

from clex.analysis.stats import mean_ci, paired_difference, ppl_by_seed

EPS = 0.1  # "flat": PPL(4L) / PPL(L) within 1 + EPS


def verdict(interval) -> str:
    """Holds / does not hold / not resolved, from a paired interval of PPL(claimed better) - PPL(other)."""
    if interval is None:
        return "not run yet"
    if interval.half_width is None:
        return f"not resolved (one seed: {interval.mean:+.2f})"
    good, bad = interval.high < 0, interval.low > 0
    text = f"{interval.mean:+.2f} ± {interval.half_width:.2f}, n = {interval.n}"
    return f"holds ({text})" if good else f"does not hold ({text})" if bad else f"not resolved at this n ({text})"


def config_value(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config.get(key, {}) if isinstance(config, dict) else {}
    return config


def runs_of(studies: dict, name: str, **match) -> list[dict]:
    """The runs of study ``name`` whose config has each dotted key's value."""
    return [r for r in studies.get(name, []) if all(config_value(r["config"], k) == v for k, v in match.items())]


def paired_at_4l(a: list[dict], b: list[dict]):
    """The paired interval of PPL(a) - PPL(b) at 4 x a's training length (None when either has not run)."""
    if not a or not b:
        return None
    n = 4 * a[0]["train_length"]
    return paired_difference(ppl_by_seed(a, n), ppl_by_seed(b, n))


def flat_row(clex: list[dict]) -> str:
    """PPL stays flat to 4L: the per-seed ratio PPL(4L) / PPL(L), its interval against 1 + EPS."""
    L = clex[0]["train_length"]
    at_l, at_4l = ppl_by_seed(clex, L), ppl_by_seed(clex, 4 * L)
    pairs = [at_4l[s] / at_l[s] for s in sorted(set(at_l) & set(at_4l))]
    if not pairs:
        return "| PPL stays flat to 4x the training length | no seed has a finite PPL at both L and 4L |"
    ratio = mean_ci(pairs)
    if ratio.high is not None and ratio.high <= 1 + EPS:
        state = "holds"
    elif ratio.low is not None and ratio.low > 1 + EPS:
        state = "does not hold"
    else:
        state = "not resolved at this n"
    return (
        f"| PPL stays flat to 4x the training length | PPL(4L) / PPL(L) = {ratio.format(3)} "
        f"(n = {ratio.n}; flat: within 1 + eps = {1 + EPS}): **{state}** |"
    )


def scaling_row(fits: dict) -> str:
    """Extrapolation grows with size and training length: both exponents' intervals above 0."""
    claim = "| Extrapolation grows with model size and training length |"
    if "clex" not in fits:
        return f"{claim} the scaling part has not run yet |"
    f = fits["clex"]
    grows = all(f["ci"][i][0] > 0 for i in (1, 2))
    shrinks = any(f["ci"][i][1] < 0 for i in (1, 2))
    state = "holds" if grows else "does not hold" if shrinks else "not resolved at this n"
    return (
        f"{claim} alpha {f['coef'][1]:.2f} [{f['ci'][1][0]:.2f}, {f['ci'][1][1]:.2f}], beta {f['coef'][2]:.2f} "
        f"[{f['ci'][2][0]:.2f}, {f['ci'][2][1]:.2f}]: **{state}** |"
    )


def claims(studies: dict, fits: dict) -> list[str]:
    """The claims table: one row per claim of the paper."""
    rows = []
    clex_4x = runs_of(studies, "miniature_table1_4x_clex", **{"sampler.position": "pose"})
    for name, label in (("pi", "PI x4"), ("yarn", "YaRN x4")):
        other = runs_of(studies, "miniature_table1_4x", **{"strategy.name": name})
        rows.append(
            f"| CLEX (t_max 16) beats {label} at L = 4 x L0, evaluated at 4L | PPL(clex) - PPL({name}) at 4L: "
            f"**{verdict(paired_at_4l(clex_4x, other))}** |"
        )
    clex = runs_of(studies, "miniature_table1", **{"strategy.name": "clex"})
    if clex:
        rows.append(flat_row(clex))
    continuous = runs_of(studies, "clex_dynamics", **{"strategy.dynamics": "continuous"})
    discrete = runs_of(studies, "clex_dynamics", **{"strategy.dynamics": "discrete"})
    rows.append(
        "| Continuous dynamics beat discrete ones | PPL(continuous) - PPL(discrete) at 4L: "
        f"**{verdict(paired_at_4l(continuous, discrete))}** |"
    )
    official = runs_of(studies, "clex_positions", **{"sampler.position": "extrapolated-random"})
    contiguous = runs_of(studies, "clex_positions", **{"sampler.position": "contiguous"})
    rows.append(
        "| Position extrapolation is needed | PPL(extrapolated-random) - PPL(contiguous) at 4L: "
        f"**{verdict(paired_at_4l(official, contiguous))}** |"
    )
    return ["| the paper's claim | what the miniature shows |", "|---|---|", *rows, scaling_row(fits)]
