"""What the commands print: --help with every key and its default, a user's --config-dir, the library noise that
is filtered (and the warnings that are not), and a sweep summary's target."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from optuna.trial import TrialState

from clex.commands import CONFIG_DIR, SWEEP_DIR
from clex.commands import run as run_cli
from clex.commands import sweep as sweep_cli
from clex.commands.cli import quiet_libraries
from clex.config.compose import compose
from clex.config.files import sweep_dirs
from clex.errors import ConfigError
from clex.sweeps import load_sweep, open_study, run_worker, summary, worker
from tests.conftest import FAST

ROOT = Path(__file__).resolve().parents[1]


def written(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def leaf_keys(node: dict, prefix: str = "") -> list[tuple[str, object]]:
    found = []
    for key, value in node.items():
        if isinstance(value, dict) and value:
            found += leaf_keys(value, f"{prefix}{key}.")
        else:
            found.append((f"{prefix}{key}", value))
    return found


def test_help_lists_every_key_of_the_default_composition_with_its_default(capsys):
    assert run_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    plain = OmegaConf.to_container(compose(CONFIG_DIR, {}, []), resolve=False)
    plain.pop("choices")  # shown as each group's "(default: ...)"
    keys = leaf_keys(plain)
    assert len(keys) > 70
    missing = [f"{key} = {written(value)}" for key, value in keys if f" {key} = {written(value)}" not in out]
    assert missing == []
    assert "    train.steps = 200" in out and "strategy.max_scale = 8.0" in out
    assert "# (a number >= 1) t_max, the largest t sampled in training" in out  # its range, then its comment
    assert "strategy  abf, clex, fbs, llama3, longrope, pi, rope, yarn   (default: clex)" in out


def test_help_of_one_group_option_shows_its_keys(capsys):
    assert run_cli.main(["--help", "strategy=yarn"]) == 0
    out = capsys.readouterr().out
    assert "strategy.beta_fast = 32.0" in out and "strategy.max_scale" not in out
    assert "strategy (strategy=yarn: strategy/yarn.yaml):" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--help", "strategy=nope"], "error: strategy='nope' is not an option of group 'strategy'; choices: abf,"),
        (["--help", "strategy=pi,yarn"], "error: --help strategy=pi,yarn: --help shows one composition"),
        (["--config-dir", "missing-folder", "--cfg"], "error: --config-dir "),
        (["--cfg", "--config-dir"], "error: --config-dir needs a folder: --config-dir DIR"),
    ],
)
def test_bad_help_or_config_dir_is_one_line(tmp_path, args, message):
    done = subprocess.run(
        [sys.executable, ROOT / "experiments" / "run.py", *args], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(message), done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_sweep_help_lists_the_study_keys_and_points_at_the_experiment_keys(capsys):
    assert sweep_cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "study.n_trials = 8" in out and "study.share_runs = false" in out
    assert "experiments/run.py --help" in out and "--config-dir DIR" in out


@pytest.fixture
def user_dir(tmp_path):
    """A user's config folder: a strategy preset, the shipped model replaced (from itself), top-level defaults."""
    folder = tmp_path / "my-configs"
    (folder / "strategy").mkdir(parents=True)
    (folder / "model").mkdir()
    (folder / "strategy" / "mine.yaml").write_text("# YaRN at 8x\nextends: yarn\nfactor: 8.0   # my factor\n")
    (folder / "model" / "tiny-llama.yaml").write_text("extends: tiny-llama\nhidden_size: 64\nnum_heads: 2\n")
    (folder / "config.yaml").write_text("train:\n  steps: 7\n")
    return folder


def test_a_config_dir_adds_a_strategy_preset_and_overrides_a_model(user_dir, capsys):
    assert run_cli.main(["--config-dir", str(user_dir), "--cfg", "strategy=mine"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["strategy"] == yaml.safe_load((CONFIG_DIR / "strategy" / "yarn.yaml").read_text()) | {"factor": 8.0}
    assert (cfg["model"]["hidden_size"], cfg["model"]["num_heads"], cfg["model"]["intermediate_size"]) == (64, 2, 336)
    assert cfg["train"]["steps"] == 7 and cfg["choices"]["strategy"] == "mine"
    assert run_cli.main([f"--config-dir={user_dir}", "--help", "strategy=mine"]) == 0
    out = capsys.readouterr().out
    assert "strategy  abf, clex, fbs, llama3, longrope, mine, pi, rope, yarn   (default: clex)" in out
    assert f"strategy (strategy=mine: {user_dir / 'strategy' / 'mine.yaml'}):" in out
    assert "strategy.factor = 8.0" in out and "# (a number >= 1) my factor" in out and "model.hidden_size = 64" in out
    assert run_cli.main(["--cfg", "strategy=mine"]) == 2  # without the folder there is no such option


@pytest.mark.parametrize(
    "path,text,message",
    [
        ("strategy/bad.yaml", "name: bogus\n", "name must be a registered strategy (abf, clex,"),
        ("strategy/bad.yaml", "name: yarn\nfactor: 8.0\n", "lacks beta_fast, beta_slow, eval_scale"),
        ("strategy/bad.yaml", "extends: yarn\nfactr: 8.0\n", "unknown key(s) factr; strategy/yarn.yaml has name,"),
        ("model/tiny-llama.yaml", "name: tiny-llama\nhidden_size: 64\n", "'extends: tiny-llama' and give only"),
        ("strategy/bad.yaml", "name: !!python/object/apply:os.system [echo]\n", "not a readable config file"),
        ("config.yaml", "train:\n  stepz: 5\n", "unknown key 'train.stepz'; did you mean 'train.steps'?"),
        ("config.yaml", "train:\n  steps: x\n", "train.steps must be an integer >= 0, got 'x'"),
        ("config.yaml", "defaults:\n  - strategy: nope\n", "defaults: strategy='nope' is not an option"),
        ("strategies/x.yaml", "a: 1\n", "strategies/ is not a config group; groups: strategy, sampler,"),
    ],
)
def test_a_bad_user_config_file_is_one_line_naming_it(tmp_path, capsys, path, text, message):
    folder = tmp_path / "my-configs"
    (folder / path).parent.mkdir(parents=True)
    (folder / path).write_text(text)
    choice = ["strategy=bad"] if path.startswith("strategy/") else []
    assert run_cli.main(["--config-dir", str(folder), "--cfg", *choice]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err
    assert "my-configs" in err  # the file or folder is named


def test_a_sweep_composes_every_trial_with_its_config_dir_and_the_study_records_it(tmp_path, user_dir):
    dirs = [CONFIG_DIR, user_dir]
    overrides = [("study.storage", str(tmp_path / "study.journal")), ("strategy", "mine"), ("train.length", "32")]
    space = "space: {strategy.factor: {type: float, low: 2.0, high: 8.0}}\n"
    sweep_path = user_dir / "sweeps" / "mine_factor.yaml"
    sweep_path.parent.mkdir()
    sweep_path.write_text("study: {objectives: [{metric: ppl@4, direction: minimize}]}\n" + space)
    found = sweep_cli.sweep_file(sweep_dirs(SWEEP_DIR, dirs), "mine_factor")  # a user's sweep file, found
    assert found == sweep_path
    sweep = load_sweep(found, overrides, dirs)
    assert sweep["config_dir"] == [str(CONFIG_DIR), str(user_dir)]
    cfg = worker.trial_config(sweep, {}, 0)  # the sweep's folders, not the argument
    assert cfg.choices.strategy == "mine" and cfg.strategy.beta_fast == 32.0 and cfg.model.hidden_size == 64
    study, _ = open_study(sweep, tmp_path)
    assert study.user_attrs["experiment"]["--config-dir"] == str(user_dir)
    other = dict(sweep, config_dir=[str(CONFIG_DIR)])  # the same sweep, started without --config-dir
    with pytest.raises(ConfigError, match=r"--config-dir=.*my-configs in the study, \(unset\) here"):
        open_study(other, tmp_path)


def test_a_sweep_with_a_missing_config_dir_is_one_line(tmp_path, capsys):
    assert sweep_cli.main(["--config-dir", str(tmp_path / "nope"), "sweep=clex_lambda"]) == 2
    assert capsys.readouterr().err == f"error: --config-dir {tmp_path / 'nope'}: no such folder\n"


def test_a_tiny_run_with_a_user_strategy_preset(tmp_path, user_dir, capsys):
    args = ["strategy=mine", f"out_dir={tmp_path / 'runs'}", "train.length=32", "eval.multipliers=[1,2]", *FAST]
    assert run_cli.main(["--config-dir", str(user_dir), *args]) == 0
    [run] = (tmp_path / "runs").glob("mine-tiny-llama-L32-*")
    results = json.loads((run / "results.json").read_text())
    assert results["strategy"] == "yarn" and results["config"]["strategy"]["factor"] == 8.0
    assert results["config"]["choices"]["strategy"] == "mine" and results["config"]["model"]["num_heads"] == 2


# the messages as the libraries write them (lightning 2.6 model_checkpoint.py and training_epoch_loop.py)
NOISE = [
    "The dirpath has changed from '/a/runs/x/checkpoints' to 'runs/x/checkpoints', therefore `best_model_score`, "
    "`kth_best_model_path`, `kth_value`, `last_model_path` and `best_k_models` won't be reloaded. Only "
    "`best_model_path` will be reloaded.",
    "Checkpoint directory /a/runs/x/checkpoints exists and is not empty.",
    "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable. This "
    "can cause unreliable results if further training is done. Consider using an end-of-epoch checkpoint or make "
    "your dataloader resumable by implementing the `state_dict` / `load_state_dict` interface.",
]


def test_the_library_noise_is_filtered_and_other_warnings_show(tmp_path):
    import optuna
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.utilities import rank_zero_warn
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        for message in NOISE:
            rank_zero_warn(message, category=PossibleUserWarning)
        (tmp_path / "ckpt").mkdir()
        (tmp_path / "ckpt" / "last.ckpt").write_text("")
        ModelCheckpoint(dirpath=tmp_path / "ckpt")._ModelCheckpoint__warn_if_dir_not_empty(tmp_path / "ckpt")
        ModelCheckpoint(dirpath=tmp_path / "ckpt").load_state_dict({"dirpath": "elsewhere", "best_model_path": ""})
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)  # Optuna's own ExperimentalWarning, per trial
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'db'}", heartbeat_interval=10, grace_period=20)
        optuna.storages.fail_stale_trials(optuna.create_study(storage=storage))
        assert caught == [], [str(w.message) for w in caught]
        warnings.warn("a warning of our own that must be seen", UserWarning, stacklevel=1)
        rank_zero_warn("another Lightning warning", category=PossibleUserWarning)
        warnings.warn(
            "Foo is experimental (supported from v9.0.0).", optuna.exceptions.ExperimentalWarning, stacklevel=1
        )
        warnings.warn("The dirpath was fine", UserWarning, stacklevel=1)  # near a pattern, not it
    assert [str(w.message) for w in caught] == [
        "a warning of our own that must be seen",
        "another Lightning warning",
        "Foo is experimental (supported from v9.0.0).",
        "The dirpath was fine",
    ]


def fake_trial(study, trial, sweep, channel):
    study.tell(trial, 1.0)
    return TrialState.COMPLETE


def test_summary_reports_the_target_the_last_worker_was_given(tmp_path, monkeypatch):
    storage = [("study.storage", str(tmp_path / "study.journal"))]
    in_file = load_sweep(SWEEP_DIR / "clex_lambda.yaml", storage, CONFIG_DIR)
    assert in_file["study"]["n_trials"] == in_file["n_trials_in_file"] == 12
    with pytest.raises(ConfigError, match="no worker has run this sweep there yet"):  # a reader creates nothing
        summary(in_file, tmp_path)
    monkeypatch.setattr(worker, "run_trial", fake_trial)  # no training: the target is what is tested
    two = load_sweep(SWEEP_DIR / "clex_lambda.yaml", storage + [("study.n_trials", "2")], CONFIG_DIR)
    assert run_worker(two, tmp_path) == 2
    expected = "; 2 finished trial(s); n_trials 2 given to the last worker started; 12 in the sweep file"
    assert expected in summary(two, tmp_path).splitlines()[0]  # what the worker prints when it is done
    assert expected in summary(in_file, tmp_path).splitlines()[0]  # --summary without study.n_trials
    five = load_sweep(SWEEP_DIR / "clex_lambda.yaml", storage + [("study.n_trials", "5")], CONFIG_DIR)
    assert (
        summary(five, tmp_path)
        .splitlines()[0]
        .endswith("; study.n_trials=5 here is no worker's (--summary runs nothing)")
    )
    assert "target" not in summary(in_file, tmp_path).splitlines()[0]


def test_the_progress_bar_writes_to_stderr_and_stdout_keeps_the_table(tmp_path, capsys):
    from clex.train.callbacks import StderrProgressBar

    bar = StderrProgressBar().init_train_tqdm()
    bar.update(1)
    bar.close()
    captured = capsys.readouterr()
    assert captured.out == "" and "1/" in captured.err  # the bar's fragments went to stderr
    assert run_cli.main([f"out_dir={tmp_path}", *FAST]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "Writing model shards" not in out and out.startswith("strategy clex")
