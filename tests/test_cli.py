"""The `edge-rl` command as a user runs it: subprocesses, exit codes, one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_policy import make_policy

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "edge_rl.cli", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


@pytest.mark.parametrize("command", ["train", "eval", "distill", "quantize", "card"])
def test_every_subcommand_has_help(command: str) -> None:
    result = cli(command, "--help")
    assert result.returncode == 0
    assert "usage: edge-rl " + command in result.stdout
    assert len(result.stdout.splitlines()) > 5


def test_train_help_lists_every_dqn_setting() -> None:
    from edge_rl.train.config import FIELD_NAMES

    text = cli("train", "--help").stdout
    for name in FIELD_NAMES - {"env_id", "env_kwargs"}:
        assert "--" + name.replace("_", "-") in text, name


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert needle in lines[0]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "NoSuchEnv-v0", "--steps", "10"], "NoSuchEnv-v0"),
        (["train", "CartPole-v1", "--env-kwargs", "{not json"], "not valid JSON"),
        (["train", "CartPole-v1", "--env-kwargs", "[1, 2]"], "JSON object"),
        (["train", "CartPole-v1", "--env-kwargs", '{"no_such_kwarg": 1}'], "no_such_kwarg"),
        (["train", "CartPole-v1", "--hidden", "64,x"], "comma-separated"),
        (["train", "CartPole-v1", "--lr", "-1"], "lr=-1.0"),
        (["train", "CartPole-v1", "--config", "/nonexistent.toml"], "nonexistent.toml"),
        (["train", "CartPole-v1", "--steps", "ten"], "must be an integer"),
        (["train", "edge_rl/AntiJam-v0", "--env-kwargs", '{"jammer": "laser"}'], "laser"),
        (["train", "Pendulum-v1", "--steps", "10"], "Discrete action"),
        (["eval", "/nonexistent/run"], "missing"),
        (["distill", "/nonexistent/run", "--out", "/tmp/x"], "missing"),
        (["distill", ".", "--out", "/tmp/x", "--quant", "2bit"], "invalid choice"),
        (["quantize", "/nonexistent/run", "--to", "int8", "--out", "/tmp/x"], "missing"),
        (["quantize", ".", "--out", "/tmp/x"], "--to"),
        (["card", "/nonexistent/run"], "missing"),
        (["eval", ".", "--episodes", "0"], "--episodes"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    assert_one_line_error(cli(*args), needle)


def test_bad_toml_setting_is_named(tmp_path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text("[dqn]\nlr = 0.001\nlearning_rate = 3\n")
    assert_one_line_error(cli("train", "CartPole-v1", "--config", str(cfg)), "learning_rate")


def test_eval_refuses_corrupt_policy(tmp_path) -> None:
    make_policy().save(tmp_path)
    data = bytearray((tmp_path / "policy.safetensors").read_bytes())
    (tmp_path / "policy.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    assert_one_line_error(cli("eval", str(tmp_path)), "policy.safetensors")


def test_eval_refuses_mismatched_env(tmp_path) -> None:
    make_policy().save(tmp_path)  # 3 observations, 4 actions
    assert_one_line_error(cli("eval", str(tmp_path), "--env", "CartPole-v1"), "policy expects 3 observations")


@pytest.mark.slow
def test_train_then_eval_round_trip(tmp_path) -> None:
    """A tiny run writes the documented run directory, and eval reads it back without torch."""
    pytest.importorskip("torch")
    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[dqn]\nlearning_starts = 200\neval_every = 1000\neval_episodes = 3\nbatch_size = 32\n")
    out = tmp_path / "run"
    result = cli(
        "train",
        "CartPole-v1",
        "--steps",
        "1500",
        "--seed",
        "3",
        "--out",
        str(out),
        "--hidden",
        "16,16",
        "--config",
        str(cfg),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "best eval return" in result.stdout
    assert {"policy.json", "policy.safetensors", "train.json", "curve.png"} <= {p.name for p in out.iterdir()}
    run = json.loads((out / "train.json").read_text())
    assert run["config"]["hidden"] == [16, 16] and run["config"]["learning_starts"] == 200
    assert run["steps"] == 1500 and len(run["evaluations"]) == 2
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    probe = (
        "import sys; sys.argv = ['edge-rl', 'eval', sys.argv[1], '--episodes', '4', '--seed', '7', '--json'];"
        "import edge_rl.cli as c; rc = c.main(sys.argv[1:]);"
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ev = subprocess.run([sys.executable, "-c", probe, str(out)], capture_output=True, text=True, env=env, timeout=60)
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert doc["episodes"] == 4 and len(doc["returns"]) == 4
    assert doc["mean_return"] == pytest.approx(sum(doc["returns"]) / 4)
    assert {"mean_return", "std_return", "episodes"} <= doc.keys() and "success_rate" not in doc


def test_eval_reports_success_rate_for_envs_that_report_it(tmp_path) -> None:
    import numpy as np

    from edge_rl.gymenv import make_env
    from edge_rl.policy import ActionSpec, Dense, ObservationSpec, Policy

    env = make_env("edge_rl/AntiJam-v0")
    n_obs, n_act = env.observation_space.shape[0], env.action_space.n
    low, high = env.observation_space.low, env.observation_space.high
    stay = Policy(
        ObservationSpec.unnormalized(low, high),
        ActionSpec(n_act),
        [Dense(np.zeros((n_act, n_obs)), np.eye(n_act)[0])],
        {"env_id": "edge_rl/AntiJam-v0"},
    )
    stay.save(tmp_path)
    doc = json.loads(cli("eval", str(tmp_path), "--episodes", "3", "--json").stdout)
    assert 0.0 <= doc["success_rate"] <= 1.0


@pytest.mark.slow
def test_any_box_discrete_gymnasium_env_works_end_to_end(tmp_path) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "acrobot"
    result = cli(
        "train",
        "Acrobot-v1",
        "--steps",
        "800",
        "--out",
        str(out),
        "--hidden",
        "8",
        "--learning-starts",
        "200",
        "--eval-every",
        "0",
        "--eval-episodes",
        "1",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(cli("eval", str(out), "--episodes", "2", "--json").stdout)
    assert doc["env_id"] == "Acrobot-v1" and -500 <= doc["mean_return"] <= 0


# ---------------------------------------------------------------------------------------------
# every subcommand, walked with bad values: exit 2 (or its documented code) and one line, never a traceback


@pytest.fixture(scope="module")
def cartpole_dir(tmp_path_factory) -> Path:
    from tests.policies import mlp

    out = tmp_path_factory.mktemp("cartpole")
    mlp("cartpole", (8,), 0)[0].save(out)
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """`edge-rl ARGS` in-process: its exit code and stderr (argparse's own exits included)."""
    from edge_rl.cli import main

    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


ADAPT = ["{policy}", "--steps", "100", "--out", "{tmp}/a", "--mode"]
SHAPE = 7  # ExitCode.OBSERVATION_MISMATCH: states of the wrong shape, documented
BAD = {  # command -> (arguments after it, with {policy} / {tmp} placeholders; a word the line must hold[; exit code])
    "train": [
        (["CartPole-v1", "--steps", "0"], "--steps"),
        (["CartPole-v1", "--steps", "-5"], "--steps"),
        (["CartPole-v1", "--hidden", "0,4"], "positive"),
        (["CartPole-v1", "--seed", "-1"], "seed"),
    ],
    "eval": [
        (["{policy}", "--episodes", "-3"], "--episodes"),
        (["{policy}", "--seed", "-1"], "seed"),
        (["{tmp}/missing"], "missing"),
    ],
    "distill": [
        (["{policy}", "--out", "{tmp}/s", "--steps", "0"], "--steps"),
        (["{policy}", "--out", "{tmp}/s", "--rounds", "0"], "--rounds"),
        (["{policy}", "--out", "{tmp}/s", "--tau", "0"], "--tau"),
        (["{policy}", "--out", "{tmp}/s", "--q-weight", "-1"], "--q-weight"),
        (["{policy}", "--out", "{tmp}/s", "--hidden", "0"], "positive"),
    ],
    "quantize": [
        (["{policy}", "--to", "int8", "--out", "{tmp}/q", "--n-states", "0"], "--n-states"),
        (["{policy}", "--to", "int8", "--out", "{tmp}/q", "--states", "{tmp}/garbage.npy"], "garbage.npy"),
        (["{policy}", "--to", "int8", "--out", "{tmp}/q", "--states", "{tmp}/wrong.npy"], "shape", SHAPE),
    ],
    "card": [
        (["{policy}", "--reference", "{tmp}/missing", "--episodes", "2"], "missing"),
        (["{policy}", "--env", "CartPole-v1", "--episodes", "0"], "--episodes"),
        (["{tmp}/garbage.npy"], "garbage.npy"),
    ],
    "export": [
        (["{policy}", "--out", "{tmp}/b", "--golden", "10"], "64"),
        (["{policy}", "--out", "{tmp}/b", "--bundle-version", "-1"], "--bundle-version"),
        (["{policy}", "--out", "{tmp}/b", "--sign", "{tmp}/missing.key"], "missing.key"),
        (["{policy}", "--out", "{tmp}/b", "--sign", "{tmp}/garbage.npy"], "key"),
        (["{policy}", "--out", "{tmp}/b", "--formats", "onnx,xyz"], "formats"),
        (["{policy}", "--out", "{tmp}/b", "--states", "{tmp}/wrong.npy"], "shape", SHAPE),
    ],
    "verify": [
        (["{tmp}/missing"], "missing"),
        (["{policy}", "--extra", "-1"], "--extra"),
        (["{policy}", "--public-key", "{tmp}/garbage.npy"], "garbage.npy"),
        (["{policy}", "--installed", "{tmp}/missing"], "missing"),
    ],
    "keygen": [
        (["--out", "{tmp}"], "exists"),
    ],
    "adapt": [
        ([*ADAPT, "head", "--shift", '50:{"jammer": "nope"}'], "jammer"),
        ([*ADAPT, "head", "--shift", '50:{"gravty": 1}'], "gravty"),
        ([*ADAPT, "head", "--shift", "500:{}"], "--shift"),
        ([*ADAPT, "head", "--gamma", "1.5"], "--gamma"),
        ([*ADAPT, "head", "--window", "0"], "--window"),
        ([*ADAPT, "full", "--env-kwargs", '{"x": 1}'], "x"),
    ],
    "device": [
        (["NoSuchEnv-v0", "--link", "loop://"], "NoSuchEnv"),
        (["CartPole-v1", "--link", "bogus://x"], "bogus"),
        (["CartPole-v1", "--link", "serial://"], "names no device"),
        (["CartPole-v1", "--link", "serial:///dev/null?baud=fast"], "baud"),
        (["CartPole-v1", "--link", "loop://", "--env-kwargs", '{"x": 1}'], "x"),
        (["CartPole-v1", "--link", "loop://", "--period-ms", "-1"], "--period-ms"),
        (["CartPole-v1", "--link", "loop://", "--heartbeat-ms", "0"], "--heartbeat-ms"),
        (["CartPole-v1", "--link", "mqtt://127.0.0.1:1/dev?tls_insecure=1"], "tls_insecure"),
        (["CartPole-v1", "--link", "loop://", "--device-id", "x" * 40], "device id"),
        (["edge_rl/AntiJam-v0", "--link", "loop://", "--env-kwargs", '{"n_channels": 64, "history": 8}'], "fit"),
        (["CartPole-v1", "--link", "loop://[::1"], "does not parse"),
        (["CartPole-v1", "--link", "mqtt://a..b/dev"], "host"),
        (["CartPole-v1", "--link", "replay://"], "names no recording"),
        (["CartPole-v1", "--link", "loop://", "--period-ms", "1e300"], "--period-ms"),
        (["CartPole-v1", "--link", "loop://", "--action-timeout-ms", "inf"], "--action-timeout-ms"),
    ],
    "run": [
        (["{tmp}/missing", "--link", "loop://"], "is missing"),
        (["{policy}", "--link", "loop://"], "not a bundle"),
        (["{policy}", "--link", "loop://", "--config", "{tmp}/garbage.npy"], "not valid TOML"),
        (["{policy}", "--link", "loop://", "--config", "{tmp}/none.toml"], "cannot read the config"),
        (["{policy}", "--link", "loop://", "--adapt", "sometimes"], "--adapt"),
        (["{policy}", "--link", "loop://", "--backend", "cuda"], "--backend"),
        (["{policy}", "--link", "loop://", "--steps", "-1"], "--steps"),
        (["{policy}", "--link", "loop://", "--telemetry", "ftp://x"], "mqtt://host:port"),
        (["{policy}", "--link", "loop://", "--telemetry", "mqtt://x/radio-1"], "only host and port"),
        (["{policy}", "--link", "loop://", "--telemetry", "mqtt://x", "--device-id", "a/#"], "device id"),
        (["{policy}", "--link", "loop://", "--state-dir", "{tmp}/garbage.npy"], "state directory"),
        (["{policy}", "--link", "loop://", "--public-key", "{tmp}/garbage.npy"], "garbage.npy"),
        (["{policy}"], "--link"),
    ],
    "monitor": [
        (["mqtt://x/dev"], "--device"),
        (["mqtt://u:secret@x"], "--password-env"),
        (["mqtt://x", "--duration", "0"], "--duration"),
        (["--replay", "{tmp}/missing.jsonl"], "missing.jsonl"),
    ],
    "broker": [(["--port", "-1"], "--port"), (["--port", "65536"], "--port")],
    "sweep": [
        (["{tmp}/missing.toml"], "cannot read"),
        (["{tmp}/garbage.npy"], "not valid TOML"),
        (["{tmp}/missing.toml", "--workers", "0"], "--workers"),
    ],
    "report": [
        (["{tmp}/missing"], "does not exist"),
        (["{tmp}"], "no trial results"),
        (["{tmp}", "--confidence", "1.5"], "--confidence"),
        (["{tmp}", "--reps", "0"], "--reps"),
    ],
}


def test_the_walk_covers_every_subcommand() -> None:
    from edge_rl.cli import COMMANDS

    assert set(BAD) == set(COMMANDS)


@pytest.mark.parametrize(
    ("command", "args", "needle", "code"),
    [(c, case[0], case[1], case[2] if len(case) > 2 else 2) for c, cases in BAD.items() for case in cases],
    ids=lambda v: str(v),
)
def test_every_subcommand_refuses_bad_values_with_one_line(command, args, needle, code, cartpole_dir, tmp_path, capsys):
    import numpy as np

    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    np.save(tmp_path / "wrong.npy", np.zeros((20, 7), np.float32))
    argv = [command, *(a.replace("{policy}", str(cartpole_dir)).replace("{tmp}", str(tmp_path)) for a in args)]
    got, err = run_cli(argv, capsys)
    assert got == code, (argv, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert needle in err, err


def test_keygen_creates_the_directory_readme_names(tmp_path, capsys) -> None:
    code, err = run_cli(["keygen", "--out", str(tmp_path / "keys" / "fleet")], capsys)
    assert code == 0, err
    assert (tmp_path / "keys" / "fleet").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("command", "blocked", "extra"),
    [("train", "torch", "train"), ("distill", "torch", "train"), ("export", "onnx", "export")],
)
def test_training_commands_on_a_device_install_name_the_extra(command, blocked, extra, cartpole_dir, tmp_path) -> None:
    """On `pip install '.[device]'` torch and onnx are absent: the command says which extra to install."""
    args = {
        "train": ["train", "CartPole-v1", "--steps", "100", "--out", str(tmp_path / "r")],
        "distill": ["distill", str(cartpole_dir), "--out", str(tmp_path / "s")],
        "export": ["export", str(cartpole_dir), "--out", str(tmp_path / "b")],
    }[command]
    probe = f"import sys; sys.modules[{blocked!r}] = None; from edge_rl.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"edge-rl[{extra}]" in result.stderr


def test_every_option_has_help_and_shows_its_default() -> None:
    import argparse

    from edge_rl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, command in sub.choices.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction) or not action.option_strings:
                continue
            text = action.help or ""
            shows_default = "default" in text or action.required or action.nargs == 0
            if not text or not shows_default:
                missing.append(f"{name} {action.option_strings[0]}")
    assert not missing, missing
