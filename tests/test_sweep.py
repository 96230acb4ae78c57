"""`edge-rl sweep`: the trial list, the resumable pipeline, a real Ray Tune run that loses a worker and its driver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_rl.cli import main
from edge_rl.errors import BadInput
from edge_rl.sweep.pipeline import run_trial
from edge_rl.sweep.runner import check_trials, pending
from edge_rl.sweep.spec import load_spec, parse_spec

EDGE_RL = [sys.executable, "-m", "edge_rl.cli"]

# CartPole pipelines small enough for CI: ~6 s each (train 1,500 steps, a 16x16 int8 student)
TINY = """
name = "tiny"
env_id = "CartPole-v1"
seeds = {seeds}
[train]
steps = 1500
learning_starts = 500
eval_every = 500
eval_episodes = 3
[grid]
lr = [1e-3, 5e-4]
hidden = [[32, 32], [16, 16]]
[pipeline.distill]
hidden = [16, 16]
steps = 300
rounds = 1
[pipeline.quantize]
n-states = 500
[pipeline.eval]
episodes = 3
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_grid_is_every_combination_times_tasks_times_seeds() -> None:
    spec = parse_spec(
        {
            "env_id": "edge_rl/AntiJam-v0",
            "seeds": [3, 7],
            "grid": {"lr": [1e-3, 5e-4], "n_step": [1, 3, 5]},
            "tasks": {"sweeping": {"jammer": "sweeping"}, "reactive": {"jammer": "reactive"}},
        }
    )
    assert len(spec.trials) == 2 * 3 * 2 * 2
    assert len({t.name for t in spec.trials}) == len(spec.trials)
    one = next(t for t in spec.trials if t.group == "lr=0.0005,n_step=5" and t.task == "reactive" and t.seed == 7)
    assert one.train == {"lr": 5e-4, "n_step": 5} and one.env_kwargs == {"jammer": "reactive"}
    assert spec.metric == "student_return"  # the full pipeline: the deployed student is what counts


def test_random_search_draws_the_same_points_every_time_so_a_rerun_resumes() -> None:
    doc = {"name": "r", "env_id": "CartPole-v1", "search": "random", "samples": 3, "grid": {"lr": [1, 2, 3, 4, 5]}}
    first, again = parse_spec(doc), parse_spec(doc)
    assert [t.name for t in first.trials] == [t.name for t in again.trials]
    assert len({t.group for t in first.trials}) == 3
    other = parse_spec(doc | {"name": "other"})  # the draw is seeded by the sweep's name
    assert {t.group for t in other.trials} <= {f"lr={v}" for v in range(1, 6)}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"seeds": 2}, "env_id is required"),
        ({"env_id": "CartPole-v1", "sedes": 2}, "unknown key(s) sedes"),
        ({"env_id": "CartPole-v1", "metric": "loss"}, "metric 'loss'"),
        ({"env_id": "CartPole-v1", "pipeline": {"steps": ["train", "quantize"]}}, "quantize needs distill"),
        ({"env_id": "CartPole-v1", "pipeline": {"steps": ["train", "eval", "export"]}}, "in that order"),
        ({"env_id": "CartPole-v1", "grid": {"lr": [1]}, "groups": {"a": {}}}, "not both"),
        ({"env_id": "CartPole-v1", "grid": {"lr": []}}, "grid.lr must be a non-empty list"),
        ({"env_id": "CartPole-v1", "seeds": [1, 1]}, "each seed once"),
        ({"env_id": "CartPole-v1", "seeds": 0}, "seeds must be"),
        ({"env_id": "CartPole-v1", "search": "random", "samples": 9}, "samples = 9"),
        ({"env_id": "CartPole-v1", "train": {"seed": 3}}, "seed is set by the sweep"),
        ({"env_id": "CartPole-v1", "pipeline": {"distill": {"quant": "int8"}}}, "quantize takes an fp32 student"),
        ({"env_id": "CartPole-v1", "grid": {"lr": [0.001, 1e-3]}}, "two trials would share the name lr=0.001__"),
        ({"env_id": "CartPole-v1", "groups": {"a__b": {}}}, "no '__'"),
        ({"env_id": "CartPole-v1", "seeds": [0, True]}, "seeds must be"),
        ({"env_id": "CartPole-v1", "seeds": 10**9}, "seeds must be"),
        ({"env_id": "CartPole-v1", "asha": {"grace_period": 2}}, "[asha] is for search = 'asha'"),
        ({"env_id": "CartPole-v1", "search": "asha", "asha": {"grace_period": "x"}}, "grace_period must be a int"),
        ({"env_id": "CartPole-v1", "search": "asha", "asha": {"reduction_factor": 1}}, "reduction_factor >= 2"),
        ({"env_id": "A-v0", "search": "asha", "tasks": {"a": {}, "b": {}}}, "give one task"),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_key(doc: dict, message: str) -> None:
    with pytest.raises(BadInput, match=None) as e:
        parse_spec(doc)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_bad_dqn_setting_fails_the_sweep_before_any_trial_runs(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, TINY.format(seeds=1).replace("lr = [1e-3, 5e-4]", "lr = [1e-3, -1.0]")))
    with pytest.raises(BadInput, match=r"group lr=-1\.0,hidden=32x32: invalid DQN settings: lr=-1\.0"):
        check_trials(spec, tmp_path / "out")
    done = subprocess.run([*EDGE_RL, "sweep", str(tmp_path / "sweep.toml")], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "invalid DQN settings" in done.stderr
    broken = subprocess.run([*EDGE_RL, "sweep", str(write(tmp_path, "env_id = [", "x.toml"))], capture_output=True)
    assert broken.returncode == 2 and b"not valid TOML" in broken.stderr and b"Traceback" not in broken.stderr


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("lr = [1e-3, 5e-4]", 'lr = ["0.001"]'), "lr = '0.001' must be float"),
        (("hidden = [[32, 32], [16, 16]]", 'hidden = ["64"]'), "hidden = '64' must be a list of integers"),
        (("eval_episodes = 3", "eval_episodes = 3\nlearning_rate = 0.1"), "unknown DQN setting 'learning_rate'"),
        (("rounds = 1", "rouns = 1"), "pipeline.distill: edge-rl: error: unrecognized arguments: --rouns 1"),
        (("rounds = 1", "rounds = 0"), "pipeline.distill: edge-rl distill: error: argument --rounds: must be"),
        (("rounds = 1", "out = 'x'"), "pipeline.distill.out is set by the sweep itself"),
        (("rounds = 1", "stream = false"), "write no-stream = true"),
        (('env_id = "CartPole-v1"', 'env_id = "CartPole-v1"\nmetric = "teacher_success"'), "reports no success"),
        (('env_id = "CartPole-v1"', 'env_id = "Nope-v9"'), "Nope-v9"),
    ],
)
def test_settings_steps_and_envs_are_checked_before_any_trial_runs(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    from edge_rl.cli.cmd_sweep import check_commands

    spec = load_spec(write(tmp_path, TINY.format(seeds=1).replace(*edit)))
    with pytest.raises(BadInput) as e:
        check_trials(spec, tmp_path / "out")
        check_commands(spec, tmp_path / "out")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_sweep_directory_refuses_other_settings_and_a_second_sweep(tmp_path: Path) -> None:
    from edge_rl.sweep.runner import Lock, trial_dir

    out = tmp_path / "out"
    spec = load_spec(write(tmp_path, TINY.format(seeds=1)))
    trial = spec.trials[0]
    trial_dir(out, trial).mkdir(parents=True)
    (trial_dir(out, trial) / "fingerprint").write_text(spec.fingerprint(trial))
    check_trials(spec, out)  # the same settings: resumable
    changed = load_spec(write(tmp_path, TINY.format(seeds=1).replace("steps = 1500", "steps = 3000")))
    with pytest.raises(BadInput, match=f"trial {trial.name} was run with other settings"):
        check_trials(changed, out)
    lock = Lock(out)
    try:
        with pytest.raises(BadInput, match=f"in use by another edge-rl sweep \\(pid {os.getpid()}\\)"):
            Lock(out)
    finally:
        lock.release()
    Lock(out).release()  # free again once the first let go


@pytest.mark.slow
def test_a_trial_cut_off_mid_step_finishes_only_what_it_had_not_finished(tmp_path: Path) -> None:
    pytest.importorskip("torch", reason="the pipeline trains: the train extra (training box)")
    spec = load_spec(write(tmp_path, TINY.format(seeds=1)))
    trial, root = spec.trials[0], tmp_path / "trial"
    first = run_trial(spec, trial, root, main)
    assert first["status"] == "ok" and first["attempts"] == 1
    assert first["metrics"]["macs"] > 0 and first["metrics"]["deployed_bytes"] > 0
    assert first["curve"]["step"] == [500, 1000, 1500]
    commands = [c for c in (root / "commands.sh").read_text().splitlines() if not c.startswith("#")]
    assert [c.split()[1] for c in commands] == ["train", "distill", "quantize", "export", "eval", "eval"]
    # a power cut during export: no result, no export marker, a half-written bundle
    (root / "result.json").unlink()
    (root / ".done" / "export").unlink()
    (root / ".done" / "eval-teacher").unlink()
    (root / ".done" / "eval-student").unlink()
    (root / "bundle" / "manifest.json").unlink()
    again = run_trial(spec, trial, root, main)
    rerun = [c for c in (root / "commands.sh").read_text().splitlines() if not c.startswith("#")][len(commands) :]
    assert [c.split()[1] for c in rerun] == ["export", "eval", "eval"]  # training was not repeated
    assert again["status"] == "ok" and again["attempts"] == 2
    assert again["score"] == first["score"] and again["metrics"]["macs"] == first["metrics"]["macs"]
    verify = subprocess.run([*EDGE_RL, "verify", str(root / "bundle")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.slow
def test_a_step_that_fails_fails_the_trial_with_a_line(tmp_path: Path) -> None:
    """A failing step (here options `edge-rl sweep` itself would refuse) ends the trial: no retry, no score."""
    pytest.importorskip("torch", reason="the pipeline trains: the train extra (training box)")
    text = TINY.format(seeds=1).replace("rounds = 1", "rounds = -4")
    spec = load_spec(write(tmp_path, 'metric = "teacher_return"\n' + text))
    result = run_trial(spec, spec.trials[0], tmp_path / "t", main)
    assert result["status"] == "failed" and result["score"] is None
    assert result["error"].startswith("distill: edge-rl distill exited with 2")
    assert "--rounds" in (tmp_path / "t" / "log.txt").read_text()
    assert (tmp_path / "t" / ".done" / "train").exists() and not (tmp_path / "t" / ".done" / "distill").exists()


def _training(root: Path) -> Path | None:
    """A trial in the middle of training: its worker wrote its pid, training started and has not finished."""
    for trial in sorted(root.glob("trials/*")):
        if (trial / "worker.pid").exists() and (trial / "teacher").exists() and not (trial / ".done/train").exists():
            return trial
    return None


def _kill_a_worker_mid_trial(out: Path) -> Path:
    """SIGKILL the worker of a trial that is training; a trial that finished in between does not count."""
    while True:
        victim = _wait(lambda: _training(out), 600, "a trial to start training")
        try:
            os.kill(int((victim / "worker.pid").read_text()), signal.SIGKILL)
        except ProcessLookupError:  # it ended meanwhile: look again once Tune moved on
            time.sleep(0.5)
            continue
        if not (victim / "result.json").exists():
            return victim


def _wait(condition, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _results(out: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in out.glob("trials/*/result.json")}


@pytest.mark.slow
def test_a_ray_sweep_of_5_seeds_x_4_configs_survives_a_killed_worker_and_a_killed_driver(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="sweeps need the scale extra (training box)")
    sweep, out = write(tmp_path, TINY.format(seeds=5)), tmp_path / "out"
    cmd = [*EDGE_RL, "sweep", str(sweep), "--out", str(out), "--workers", "2", "--quiet"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        # 1. kill the worker process of a trial in the middle of its pipeline: Tune retries the trial
        victim = _kill_a_worker_mid_trial(out)
        # 2. once 8 trials are done, kill the sweep itself (SIGKILL: no clean-up of any kind)
        _wait(lambda: len(_results(out)) >= 8 and victim.name in _results(out), 600, "8 trials and the victim")
        driver.kill()
        driver.wait(30)
        before = _results(out)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the local Ray processes the killed driver left behind
    assert len(before) < 20
    assert before[victim.name]["attempts"] == 2 and before[victim.name]["status"] == "ok"  # Tune retried it
    # 3. the same command again finishes the rest
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    after = _results(out)
    assert len(after) == 20 and all(r["status"] == "ok" for r in after.values()), {
        n: r["status"] for n, r in after.items()
    }
    for name, result in before.items():  # finished trials were not run again, nor rewritten
        assert after[name] == result
    assert len({r["group"] for r in after.values()}) == 4 and {r["seed"] for r in after.values()} == set(range(5))
    for result in after.values():
        assert result["score"] == result["metrics"]["student_return"] and result["metrics"]["macs"] > 0
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["status"] == {"ok": 20, "failed": 0, "pruned": 0, "missing": 0}
    best = json.loads((out / "best.json").read_text())
    assert len(best) == 4
    for entry in best:
        group = [r for r in after.values() if r["group"] == entry["group"]]
        assert entry["score"] == max(r["score"] for r in group)
        verify = subprocess.run([*EDGE_RL, "verify", entry["bundle"]], capture_output=True, text=True)
        assert verify.returncode == 0, verify.stdout + verify.stderr
    assert pending(load_spec(sweep), out) == []


@pytest.mark.slow
def test_asha_stops_trials_that_trail_after_their_grace_evaluations_and_records_them_as_pruned(
    tmp_path: Path,
) -> None:
    pytest.importorskip("ray", reason="sweeps need the scale extra (training box)")
    text = """
name = "asha"
env_id = "CartPole-v1"
seeds = 1
search = "asha"
samples = 4
metric = "teacher_return"
[asha]
grace_period = 2
[train]
steps = 3000
learning_starts = 500
eval_every = 500
eval_episodes = 3
early_stop = false
[grid]
lr = [1e-3, 5e-4, 1e-5, 3e-6, 1e-6]
[pipeline]
steps = ["train", "eval"]
[pipeline.eval]
episodes = 3
"""
    out = tmp_path / "out"
    cmd = [*EDGE_RL, "sweep", str(write(tmp_path, text)), "--out", str(out), "--workers", "2", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = list(_results(out).values())
    assert len(results) == 4
    pruned = [r for r in results if r["status"] == "pruned"]
    finished = [r for r in results if r["status"] == "ok"]
    assert pruned and finished, [(r["group"], r["status"]) for r in results]
    assert all(len(r["curve"]["step"]) == 6 for r in finished)  # every evaluation of the 3,000 steps
    assert all(2 <= len(r["curve"]["step"]) < 6 and r["score"] is None for r in pruned)
    again = subprocess.run([*cmd, "--list"], capture_output=True, text=True)
    assert "4 trials, 0 pending" in again.stdout  # a pruned trial is finished: a rerun does not revive it
