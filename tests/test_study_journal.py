"""A study's journal and settings: a record cut by a killed worker loses nothing else; a worker with other
experiment overrides does not join a study silently."""

import time
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState

from clex.commands import CONFIG_DIR
from clex.errors import ConfigError
from clex.sweeps import STUDY_DEFAULTS, open_study, run_worker, summary
from clex.train import experiment
from tests.test_sweeps import TINY as SWEEP_TINY


def sweep_of(tmp_path, n_trials, *experiment_overrides):
    return {
        "study": {
            **STUDY_DEFAULTS,
            "name": "unit",
            "storage": str(tmp_path / "unit.journal"),
            "pruner": "none",
            "sampler": "random",
            "n_trials": n_trials,
            "objectives": [{"metric": "ppl@1", "direction": "minimize"}],
        },
        "experiment": ["strategy=clex", "train.steps=6", f"out_dir={tmp_path}", *experiment_overrides],
        "space": {"strategy.amplification": {"type": "float", "low": 1.0, "high": 2.0}},
        "config_dir": [str(CONFIG_DIR)],
    }


@pytest.fixture
def instant_runs(monkeypatch):
    """Trials that 'train' in no time: their PPL is the amplification suggested."""

    def run(cfg, prepared=None, callbacks=(), wait=False):
        return {
            "run_dir": str(cfg.name),
            "seed": 0,
            "eval": [{"length": 128, "ppl": cfg.strategy.amplification}],
            "train_length": 128,
            "extrapolation_length": {"value": 128},
            "parameters": 1,
        }

    monkeypatch.setattr(experiment, "run_experiment", run)
    monkeypatch.setattr(experiment, "prepare", lambda cfg, load_weights=True, data=None: SimpleNamespace(data=data))


def trials(tmp_path):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "unit.journal")))
    return optuna.load_study(study_name="unit", storage=storage).get_trials()


def test_a_journal_cut_mid_record_resumes_with_every_finished_trial(tmp_path, instant_runs, capsys):
    run_worker(sweep_of(tmp_path, 2), tmp_path)
    before = [(t.number, t.state, t.params) for t in trials(tmp_path)]
    study, journal = open_study(sweep_of(tmp_path, 2), tmp_path)
    started = study.ask()  # a worker starts its next trial and is killed while writing a record of it
    started.set_user_attr("heartbeat", time.time() - 3600)
    started.set_user_attr("overrides", ["strategy=clex"])
    data = journal.read_bytes()
    journal.write_bytes(data[: len(data) - 20])
    capsys.readouterr()
    assert "states: running 1, complete 2" in summary(sweep_of(tmp_path, 2), tmp_path)  # --summary reads it
    out = capsys.readouterr().out
    assert out.count("dropped its incomplete last record") == 1 and str(journal) in out, out
    assert run_worker(sweep_of(tmp_path, 3), tmp_path) == 1  # the killed worker's trial retried
    after = trials(tmp_path)
    assert [(t.number, t.state, t.params) for t in after[:2]] == before
    assert [t.state for t in after[2:]] == [TrialState.FAIL, TrialState.COMPLETE]
    assert "dropped" not in capsys.readouterr().out  # said once: the journal is whole again


def test_a_damaged_record_before_the_last_is_one_line_naming_it(tmp_path, instant_runs):
    run_worker(sweep_of(tmp_path, 1), tmp_path)
    journal = tmp_path / "unit.journal"
    lines = journal.read_bytes().split(b"\n")
    journal.write_bytes(b"\n".join([lines[0], b"{garbage", *lines[1:]]))
    with pytest.raises(ConfigError, match=f"study journal {journal}:2 is not a JSON record"):
        open_study(sweep_of(tmp_path, 1), tmp_path)


def test_a_worker_with_other_experiment_overrides_is_refused_and_the_study_untouched(tmp_path, instant_runs):
    run_worker(sweep_of(tmp_path, 1), tmp_path)
    journal = tmp_path / "unit.journal"
    before = journal.read_bytes()
    longer = sweep_of(tmp_path, 2, "train.steps=10", "seed=3")
    with pytest.raises(
        ConfigError,
        match=r"study 'unit' was made with other experiment overrides \(seed=\(unset\) in "
        r"the study, 3 here; train.steps=6 in the study, 10 here\); .*study.name=",
    ):
        run_worker(longer, tmp_path)
    assert journal.read_bytes() == before
    assert run_worker(sweep_of(tmp_path, 2, f"out_dir={tmp_path / 'elsewhere'}"), tmp_path) == 1  # where, not what
    longer["study"]["name"] = "longer"
    assert run_worker(longer, tmp_path) == 2


def test_the_summary_of_a_study_that_does_not_exist_creates_nothing(tmp_path, capsys):
    from clex.commands import sweep

    journal = tmp_path / "studies" / "x.journal"
    assert sweep.main(["sweep=clex_lambda", "--summary", f"study.storage={journal}"]) == 2
    assert "no worker has run this sweep there yet" in capsys.readouterr().err and not journal.exists()


def test_a_point_drawn_twice_reuses_the_finished_run_and_says_so(tmp_path, capsys):
    """A real (tiny) run: the second trial of one point trains nothing and reports the first's results."""
    tiny = [*SWEEP_TINY, "train.val_every=3"]  # the sweep tests' tiny model
    sweep = sweep_of(tmp_path, 2, *tiny)
    sweep["experiment"] = [a for a in sweep["experiment"] if a != "train.steps=6"] + ["train.steps=3"]
    sweep["space"] = {"strategy.amplification": {"type": "categorical", "choices": [1.5]}}  # one point only
    run_worker(sweep, tmp_path)
    first, second = trials(tmp_path)
    assert first.state == second.state == TrialState.COMPLETE and first.values == second.values
    assert second.user_attrs["run_dir"] == first.user_attrs["run_dir"]
    assert "trial 1: the same point as finished trial 0; its run reused, not trained again" in capsys.readouterr().out


def test_a_study_recorded_before_the_attention_section_accepts_its_own_settings_today():
    """ablation_clex's journal records strategy.log_scale_clamp=false; its sweep file now says
    attention.log_scale_clamp=false: the same setting, so a worker resumes it; another value is still refused."""
    from clex.sweeps.study import check_same_experiment

    recorded = {"experiment": {"strategy.log_scale_clamp": "false"}}
    study = SimpleNamespace(study_name="ablation_clex", user_attrs=recorded)
    check_same_experiment(study, {"attention.log_scale_clamp": "false"})
    with pytest.raises(ConfigError, match="attention.log_scale_clamp=false in the study, true here"):
        check_same_experiment(study, {"attention.log_scale_clamp": "true"})
