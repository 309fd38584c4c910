"""Sweep workers: shared journal storage, a killed worker's trial retried, pruning, bad sweep files."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from clex.commands import CONFIG_DIR, SWEEP_DIR
from clex.commands import sweep as sweep_cli
from clex.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "sweeps" / "run.py"

TINY = [
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "model.num_layers=1",
    "model.num_heads=2",
    "train.length=32",
    "train.batch_size=2",
    "train.val_batches=1",
    "base.steps=0",
    "eval.multipliers=[1,4]",
    "eval.max_tokens=128",
    "data.max_documents=150",
    "trainer.enable_progress_bar=false",
]


def worker_args(tmp_path, *extra, steps=3):
    return [
        "sweep=clex_lambda",
        f"study.storage={tmp_path / 'study.journal'}",
        f"out_dir={tmp_path / 'runs'}",
        f"train.steps={steps}",
        "train.val_every=1",
        *TINY,
        *extra,
    ]


def start_worker(tmp_path, *extra, steps=3):
    return subprocess.Popen(
        [sys.executable, WORKER, *worker_args(tmp_path, *extra, steps=steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def forget_settings(tmp_path, name="clex_lambda"):
    """A test's next worker runs other settings on purpose (a quick retry, a trial that learns nothing):
    clearing the study's record of its settings lets it join, as a study made before they were recorded."""
    load(tmp_path, name).set_user_attr("experiment", None)


def load(tmp_path, name="clex_lambda"):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_two_workers_share_one_study_and_finish_exactly_n_trials(tmp_path):
    workers = [start_worker(tmp_path, "study.n_trials=4", "study.pruner=none") for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4 and len(trials) == 4
    run_dirs = [t.user_attrs["run_dir"] for t in trials]
    points = {tuple(sorted(t.params.items())) for t in trials}  # a point drawn after it finished reuses its run
    assert len(points) <= len(set(run_dirs)) <= 4 and all((Path(d) / "results.json").is_file() for d in run_dirs)
    ran = [int(line.split()[3]) for out in outputs for line in out.splitlines() if line.startswith("worker done")]
    assert sum(ran) == 4 and all(n >= 1 for n in ran)  # both workers did work, none twice


@pytest.mark.slow
def test_a_killed_worker_trial_is_failed_and_retried(tmp_path):
    options = ["study.n_trials=2", "study.pruner=none", "study.heartbeat_interval=1", "study.grace_period=4"]
    victim = start_worker(tmp_path, *options, steps=400)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until its first trial is running and beating
        time.sleep(1)
        if (tmp_path / "study.journal").exists():
            running = [t for t in load(tmp_path).get_trials() if t.state == TrialState.RUNNING]
            if running and "heartbeat" in running[0].user_attrs:
                break
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    forget_settings(tmp_path)  # the retry runs 3 steps, not 400
    killed = running[0].number
    restarted = subprocess.run(
        [sys.executable, WORKER, *worker_args(tmp_path, *options)], capture_output=True, text=True, timeout=600
    )
    assert restarted.returncode == 0, restarted.stdout + restarted.stderr
    trials = load(tmp_path).get_trials()
    assert trials[killed].state == TrialState.FAIL
    assert trials[killed].user_attrs["fail_reason"] == "worker died (no heartbeat)"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[killed].params
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 2
    assert not [t for t in trials if t.state == TrialState.RUNNING]


@pytest.mark.slow
def test_pruning_prunes_a_clearly_bad_trial(tmp_path):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))
    )
    study = optuna.create_study(study_name="clex_lambda", storage=storage)
    study.enqueue_trial({"strategy.amplification": 1.0})
    study.enqueue_trial({"strategy.amplification": 1.0})
    # the second trial learns nothing (lr 1e-9): its validation loss is above the first's at every step
    first = sweep_cli.main(
        worker_args(
            tmp_path,
            "study.n_trials=1",
            "study.pruner_startup_trials=1",
            "train.lr=1e-2",
            "train.warmup_steps=1",
            steps=4,
        )
    )
    forget_settings(tmp_path)  # the second trial's learning rate differs on purpose
    second = sweep_cli.main(
        worker_args(
            tmp_path,
            "study.n_trials=2",
            "study.pruner_startup_trials=1",
            "train.lr=1e-9",
            "train.warmup_steps=1",
            steps=4,
        )
    )
    assert first == second == 0
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert trials[1].user_attrs["prune_reason"].startswith("val/loss=")
    assert sorted(trials[1].intermediate_values) == [1]  # reported at the global step, pruned at the first


@pytest.mark.slow
def test_summary_lists_states_and_run_dirs(tmp_path, capsys):
    assert sweep_cli.main(worker_args(tmp_path, "study.n_trials=1", "study.pruner=none")) == 0
    capsys.readouterr()
    assert sweep_cli.main(worker_args(tmp_path, "study.n_trials=1", "--summary")) == 0
    out = capsys.readouterr().out
    assert "states: complete 1" in out and "clex_lambda-trial0000" in out and "strategy.amplification=" in out


GOOD_STUDY = "study: {objectives: [{metric: ppl@4, direction: minimize}]}\nexperiment: [strategy=clex]\n"


@pytest.mark.parametrize(
    "text,message",
    [
        (
            GOOD_STUDY + "space: {strategy.amplificaton: {type: float, low: 1, high: 2}}",
            "space key 'strategy.amplificaton' is not an experiment config key",
        ),
        (GOOD_STUDY + "space: {}", "space is empty"),
        (
            GOOD_STUDY + "space: {strategy.amplification: {type: gaussian, low: 1, high: 2}}",
            "type must be float, int or categorical",
        ),
        (GOOD_STUDY + "space: {strategy.amplification: {type: float, low: 2, high: 1}}", "needs numbers low < high"),
        (
            GOOD_STUDY + "space: {strategy.amplification: {type: float, low: 0, high: 1, log: true}}",
            "log distribution needs low > 0",
        ),
        (
            "study: {trials: 2}\nspace: {strategy.amplification: {type: float, low: 1, high: 2}}",
            "unknown study key 'trials'",
        ),
        (
            "study: {objectives: [{metric: ppl@x, direction: minimize}]}\n"
            "space: {strategy.amplification: {type: float, low: 1, high: 2}}",
            "objective metric 'ppl@x'",
        ),
        ("searchspace: {}", "unknown section(s) searchspace"),
        (
            GOOD_STUDY + "space: {sampler: {type: categorical, choices: [pose, poze]}}",
            "sampler='poze' is not an option",
        ),
        (
            GOOD_STUDY + "space: {train.steps: {type: categorical, choices: [10, ten]}}",
            "train.steps must be an integer",
        ),
        (
            "study: {objectives: [{metric: ppl@4, direction: minimize}]}\n"
            "experiment: [strategy=clex, 'eval.multipliers=[1,2]']\n"
            "space: {strategy.max_scale: {type: float, low: 4, high: 16}}",
            "objective ppl@4 needs length 512",
        ),
        (GOOD_STUDY + "experiment: [x]\nspace: {}", "duplicate key"),
        (GOOD_STUDY + "space: {strategy.amplification: !!python/name:os.system {type: float}}", "bad.yaml"),
        (
            "study: {objectives: [{metric: ppl@1, direction: minimize}], seeds: 0}\n"
            "space: {strategy.amplification: {type: float, low: 1, high: 2}}",
            "study.seeds must be a positive integer",
        ),
        (
            "study: {objectives: [{metric: ppl@1, direction: minimize}], heartbeat_interval: 0}\n"
            "space: {strategy.amplification: {type: float, low: 1, high: 2}}",
            "study.heartbeat_interval must be a number >= 1",
        ),
        (
            GOOD_STUDY + "space: {strategy.max_scale: {type: categorical, choices: 8.0}}",
            "needs a non-empty choices list",
        ),
    ],
)
def test_malformed_sweep_file_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.setattr(sweep_cli, "SWEEP_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text(text + "\n")
    assert sweep_cli.main(["sweep=bad", f"study.storage={tmp_path / 's.journal'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "s.journal").exists()


def test_unknown_sweep_names_the_choices(capsys):
    assert sweep_cli.main(["sweep=nope"]) == 2
    err = capsys.readouterr().err
    shipped = ", ".join(sorted(p.stem for p in SWEEP_DIR.glob("*.yaml")))
    assert f"choices: {shipped}" in err and "clex_lambda" in shipped and "miniature_table1" in shipped


def assert_two_trials_of_two_ranks(tmp_path):
    trials = load(tmp_path).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2  # not four: rank 1 asked nothing
    for t in trials:
        result = json.loads((Path(t.user_attrs["run_dir"]) / "results.json").read_text())
        assert result["train"]["world_size"] == 2
        assert result["config"]["strategy"]["amplification"] == t.params["strategy.amplification"]


@pytest.mark.slow
def test_a_ddp_worker_asks_optuna_on_rank_zero_only(tmp_path):
    """Two CPU processes per trial (gloo): rank 0 asks and tells, rank 1 follows by broadcast."""
    done = subprocess.run(
        [
            sys.executable,
            WORKER,
            *worker_args(
                tmp_path,
                "study.n_trials=2",
                "study.pruner=median",
                "study.pruner_startup_trials=5",
                "trainer=ddp",
                "trainer.accelerator=cpu",
                "trainer.devices=2",
                "trainer.precision=32-true",
            ),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert_two_trials_of_two_ranks(tmp_path)


def free_port() -> int:
    """A port free together with the next one (the trial channel's store listens on MASTER_PORT + 1)."""
    import socket

    while True:
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port


@pytest.mark.slow
def test_a_worker_whose_ranks_srun_started_on_two_nodes_runs_each_trial_across_both(tmp_path):
    """What SLURM's srun does for a trial spanning nodes, on one machine: two processes started at
    once with SLURM's variables, one per "node". Rank 0 asks Optuna and hands the first trial over its
    TCP store, later ones by broadcast; rank 1 must follow, not ask."""
    port = free_port()
    args = worker_args(
        tmp_path,
        "study.n_trials=2",
        "study.pruner=none",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.num_nodes=2",
        "trainer.precision=32-true",
    )
    slurm = {
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "sweep",
        "SLURM_NODELIST": "127.0.0.1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    ranks = [
        subprocess.Popen(
            [sys.executable, WORKER, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **slurm, "SLURM_PROCID": str(r), "SLURM_LOCALID": "0", "SLURM_NODEID": str(r)},
        )
        for r in range(2)
    ]
    outputs = [r.communicate(timeout=600)[0] for r in ranks]
    assert all(r.returncode == 0 for r in ranks), [o[-2000:] for o in outputs]
    assert_two_trials_of_two_ranks(tmp_path)


@pytest.mark.parametrize("path", sorted(SWEEP_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_sweep_file_loads(path):
    from clex.sweeps import load_sweep

    sweep = load_sweep(path, [], CONFIG_DIR)
    assert sweep["space"] and sweep["study"]["objectives"]


@pytest.mark.slow
def test_study_seeds_runs_each_trial_per_seed_and_stores_every_value(tmp_path):
    assert sweep_cli.main(worker_args(tmp_path, "study.n_trials=1", "study.pruner=none", "study.seeds=2")) == 0
    trial = load(tmp_path).get_trials()[0]
    per_seed = trial.user_attrs["values_per_seed"]
    assert sorted(per_seed) == ["0", "1"] and trial.user_attrs["n_seeds"] == 2
    assert trial.value == pytest.approx((per_seed["0"][0] + per_seed["1"][0]) / 2)
    assert trial.user_attrs["values_std"][0] == pytest.approx(abs(per_seed["0"][0] - per_seed["1"][0]) / 2**0.5)
    for seed, run_dir in zip((0, 1), trial.user_attrs["run_dirs"], strict=False):
        results = json.loads((Path(run_dir) / "results.json").read_text())
        ppl = next(r["ppl"] for r in results["eval"] if r["length"] == 4 * 32)
        assert results["seed"] == seed and ppl == pytest.approx(per_seed[str(seed)][0])


@pytest.mark.slow
def test_two_workers_started_together_explore_different_points(tmp_path):
    workers = [
        start_worker(tmp_path, "study.n_trials=2", "study.pruner=none", "study.sampler=random", steps=1)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    trials = load(tmp_path).get_trials()
    assert len(trials) == 2 and trials[0].params != trials[1].params


@pytest.mark.slow
def test_a_grid_sweep_ends_normally_at_its_last_point(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep_cli, "SWEEP_DIR", tmp_path)
    (tmp_path / "grid.yaml").write_text(
        GOOD_STUDY.replace("ppl@4", "ppl@1")
        + "space: {strategy.amplification: {type: categorical, choices: [1.0, 2.0]}}\n"
    )
    args = [
        "sweep=grid",
        f"study.storage={tmp_path / 'study.journal'}",
        f"out_dir={tmp_path / 'runs'}",
        "train.steps=1",
        "study.sampler=grid",
        "study.n_trials=5",
        "study.pruner=none",
        *TINY,
    ]
    assert sweep_cli.main(args) == 0
    assert "the grid has 2 points" in capsys.readouterr().out
    trials = load(tmp_path, "grid").get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert sorted(t.params["strategy.amplification"] for t in trials) == [1.0, 2.0]


def in_process_sweep(tmp_path, **study):
    from clex.sweeps import STUDY_DEFAULTS

    return {
        "study": {
            **STUDY_DEFAULTS,
            "name": "unit",
            "storage": str(tmp_path / "unit.journal"),
            "pruner": "none",
            "objectives": [{"metric": "ppl@1", "direction": "minimize"}],
            **study,
        },
        "experiment": ["strategy=clex", *TINY, f"out_dir={tmp_path}"],
        "space": {"strategy.amplification": {"type": "float", "low": 1.0, "high": 2.0}},
        "config_dir": [str(CONFIG_DIR)],
    }


def test_a_worker_stops_after_consecutive_failures(tmp_path, monkeypatch):
    from clex.errors import TooManyFailures
    from clex.sweeps import worker
    from clex.train import experiment

    def broken(cfg, prepared=None, callbacks=(), wait=False):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(experiment, "run_experiment", broken)
    monkeypatch.setattr(experiment, "prepare", lambda cfg, load_weights=True, data=None: SimpleNamespace(data=data))
    with pytest.raises(TooManyFailures, match="the last 3 trials failed .* out of memory"):
        worker.run_worker(in_process_sweep(tmp_path, n_trials=10, max_failures=3), tmp_path)
    assert [t.state for t in load_unit(tmp_path).get_trials()] == [TrialState.FAIL] * 3


def load_unit(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "unit.journal")))
    return optuna.load_study(study_name="unit", storage=storage)


def test_a_live_worker_declared_dead_says_so_and_goes_on(tmp_path, monkeypatch, capsys):
    from clex.sweeps import ranks, study, worker
    from clex.train import experiment

    def slow_run(cfg, prepared=None, callbacks=(), wait=False):
        study = load_unit(tmp_path)  # another worker, seeing a late heartbeat, fails this trial
        running = study.get_trials(states=(TrialState.RUNNING,))[0]
        study._storage.set_trial_state_values(running._trial_id, TrialState.FAIL)
        return {
            "run_dir": "x",
            "seed": 0,
            "eval": [{"length": 32, "ppl": 5.0}],
            "train_length": 32,
            "extrapolation_length": {"value": 32},
            "parameters": 1,
        }

    monkeypatch.setattr(experiment, "run_experiment", slow_run)
    monkeypatch.setattr(experiment, "prepare", lambda cfg, load_weights=True, data=None: SimpleNamespace(data=data))
    study, _ = study.open_study(in_process_sweep(tmp_path), tmp_path)
    trial = study.ask()
    assert worker.run_trial(study, trial, in_process_sweep(tmp_path), ranks.TrialChannel()) is None
    assert "was marked failed by another worker" in capsys.readouterr().out


def test_a_failed_grid_point_is_run_again_not_skipped(tmp_path, monkeypatch):
    from clex.sweeps import worker
    from clex.train import experiment

    calls = []

    def flaky(cfg, prepared=None, callbacks=(), wait=False):
        calls.append(cfg.strategy.amplification)
        if len(calls) == 1:
            raise RuntimeError("out of memory")
        return {
            "run_dir": "x",
            "seed": 0,
            "eval": [{"length": 32, "ppl": cfg.strategy.amplification}],
            "train_length": 32,
            "extrapolation_length": {"value": 32},
            "parameters": 1,
        }

    monkeypatch.setattr(experiment, "run_experiment", flaky)
    monkeypatch.setattr(experiment, "prepare", lambda cfg, load_weights=True, data=None: SimpleNamespace(data=data))
    sweep = in_process_sweep(tmp_path, n_trials=3, sampler="grid")
    sweep["space"] = {"strategy.amplification": {"type": "categorical", "choices": [1.0, 2.0, 3.0]}}
    worker.run_worker(sweep, tmp_path)
    complete = [
        t.params["strategy.amplification"] for t in load_unit(tmp_path).get_trials() if t.state == TrialState.COMPLETE
    ]
    assert sorted(complete) == [1.0, 2.0, 3.0] and len(calls) == 4


def test_a_trial_is_composed_from_its_values_with_their_types_not_from_text(tmp_path):
    """A drawn point reaches the config as the values Optuna drew, each read as its key's kind: null stays null
    (as text it became the string 'None'), an integer drawn for a float key becomes that float, and the config is
    the one run.py composes from the same settings on the command line."""
    from clex.config.compose import single_config
    from clex.sweeps import worker
    from clex.sweeps.schema import load_sweep

    sweep = load_sweep(SWEEP_DIR / "clex_lambda.yaml", [("study.storage", str(tmp_path / "s.journal"))], CONFIG_DIR)
    values = {"train.ode_lr": None, "strategy.max_scale": 4, "sampler": "official", "attention.log_scale": True}
    cfg = worker.trial_config(sweep, values, 0)
    assert cfg.train.ode_lr is None and cfg.attention.log_scale is True and cfg.choices.sampler == "official"
    assert isinstance(cfg.strategy.max_scale, float) and cfg.strategy.max_scale == 4.0
    words = ["train.ode_lr=null", "strategy.max_scale=4", "sampler=official", "attention.log_scale=true"]
    same = single_config(CONFIG_DIR, sweep["experiment"] + words)
    same.name, same.out_dir = "clex_lambda-trial0000", str(Path("runs") / "sweeps" / "clex_lambda")  # its own folder
    assert cfg == same
    with pytest.raises(ConfigError, match="train.ode_lr must be a number >= 0 or null, got 'None'"):
        single_config(CONFIG_DIR, sweep["experiment"] + [f"train.ode_lr={None}"])  # the point, written as text
