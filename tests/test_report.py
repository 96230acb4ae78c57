"""`edge-rl report` on sweep directories written here: its numbers, its files, its one-line errors."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy", reason="statistics need the stats extra (training box)")

from edge_rl import stats
from edge_rl.cli import main
from tests.test_cli import assert_one_line_error, cli

GROUPS = {"int8": 0.9, "1bit": 0.7}  # mean score per group; tasks add an offset
TASKS = {"sweeping": 0.0, "reactive": -0.2}
SEEDS = range(5)
PRUNED = ("1bit", "sweeping", 4)  # its result says pruned: tasks of a group may have unequal runs
REPS = "300"


def score(group: str, task: str, seed: int) -> float:
    return GROUPS[group] + TASKS[task] + 0.1 * float(np.random.default_rng([seed, len(group), len(task)]).normal())


def write_trial(root: Path, name: str, doc: object) -> Path:
    path = root / "trials" / name / "result.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def result(group: str, task: str, seed: int, **changes: object) -> dict:
    doc = {
        "group": group,
        "task": task,
        "seed": seed,
        "score": score(group, task, seed),
        "metrics": {"params": 4000 + seed, "int8_bytes": 5000, "steps_to_95": None if seed == 0 else 1000 * seed},
        "curve": {"step": [0, 100], "score": [0.0, 1.0]},
        "status": "ok",
    }
    return {**doc, **changes}


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for group in GROUPS:
        for task in TASKS:
            for seed in SEEDS:
                write_trial(tmp_path, f"{group}-{task}-{seed}", result(group, task, seed))
    write_trial(tmp_path, "1bit-reactive-9", {"group": "1bit", "task": "reactive", "seed": 9, "status": "failed"})
    write_trial(tmp_path, "1bit-sweeping-4", result(*PRUNED, status="pruned", score=None, metrics={}))
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "antijam", "metric": "success_rate"}))
    return tmp_path


def expected_scores(group: str) -> list[list[float]]:
    return [[score(group, task, seed) for seed in SEEDS if (group, task, seed) != PRUNED] for task in sorted(TASKS)]


def report(capsys, *args: str) -> tuple[str, str]:
    assert main(["report", *args, "--reps", REPS]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def table_rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.startswith(("int8 ", "1bit "))}


def test_table_numbers_are_edge_rl_stats(sweep: Path, capsys) -> None:
    out, err = report(capsys, str(sweep))
    assert err == ""
    table, improvement = out.split("\n\n")
    rows = table_rows(table)
    for group in GROUPS:
        overall = stats.interval_estimate(expected_scores(group), reps=int(REPS), seed=0)
        assert str(overall) in rows[group]
        for task_scores in expected_scores(group):
            assert str(stats.interval_estimate(task_scores, reps=int(REPS), seed=0)) in rows[group]
    assert rows["1bit"].split()[1:4] == ["9", "1", "1"]  # runs, failed, pruned
    assert "failed trials (not scored): 1bit-reactive-9" in table
    assert "pruned trials (not scored): 1bit-sweeping-4" in table
    assert "leaving them out flatters their group" in table
    assert "fewer than 5 runs on some task in 1bit:" in table  # 4 on sweeping
    assert "unequal runs per task in 1bit:" in table  # 5 on reactive
    assert "sweep antijam, success_rate" in table
    poi = stats.probability_of_improvement(expected_scores("1bit"), expected_scores("int8"), reps=int(REPS), seed=0)
    assert "P(group > int8)" in improvement  # int8 has the higher IQM, so it is the baseline
    assert 0 < poi.point < 0.5
    assert re.split(r"\s{2,}", table_rows(improvement)["1bit"])[1:] == [str(poi), "reactive, sweeping"]


def test_metric_medians_and_choice(sweep: Path, capsys) -> None:
    out, _ = report(capsys, str(sweep), "--metrics", "steps_to_95")
    assert "median steps_to_95" in out and "median params" not in out
    rows = table_rows(out.split("\n\n")[0])
    # int8: 1000..4000 on both tasks (seed 0's null left out); 1bit: seed 4 pruned on one task
    assert {group: row.split()[-1] for group, row in rows.items()} == {"int8": "2500", "1bit": "2000"}
    assert main(["report", str(sweep), "--metrics", "nope"]) == 2
    assert "no trial records metric 'nope'; they record: int8_bytes, params, steps_to_95" in capsys.readouterr().err


def test_report_json_and_pngs(sweep: Path, tmp_path: Path, capsys) -> None:
    out_dir = tmp_path / "out"
    report(capsys, str(sweep), "--out", str(out_dir), "--baseline", "1bit", "--confidence", "0.9")
    doc = json.loads((out_dir / "report.json").read_text())
    assert doc["baseline"] == "1bit" and doc["confidence"] == 0.9 and doc["reps"] == int(REPS)
    assert doc["tasks"] == ["reactive", "sweeping"]
    int8 = stats.interval_estimate(expected_scores("int8"), reps=int(REPS), confidence=0.9, seed=0)
    assert doc["groups"]["int8"]["iqm"] == int8.as_dict()
    assert doc["groups"]["1bit"]["failed"] == ["1bit-reactive-9"]
    assert doc["groups"]["int8"]["metrics"] == {"int8_bytes": 5000, "params": 4002, "steps_to_95": 2500}
    poi = stats.probability_of_improvement(expected_scores("int8"), expected_scores("1bit"), int(REPS), 0.9, 0)
    assert doc["probability_of_improvement"]["int8"] == {**poi.as_dict(), "tasks": ["reactive", "sweeping"]}
    profile = doc["performance_profile"]
    assert len(profile["taus"]) == len(profile["groups"]["int8"]["fraction"]) == 101
    for name in ("interval_estimates.png", "performance_profile.png", "probability_of_improvement.png"):
        data = (out_dir / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
        import matplotlib.image

        pixels = matplotlib.image.imread(out_dir / name)
        assert pixels.shape[0] > 200 and pixels.std() > 0.05, name  # an image with something drawn on it
    assert not (sweep / "report.json").exists()


def test_same_seed_same_report_other_seed_other_intervals(sweep: Path, capsys) -> None:
    first, _ = report(capsys, str(sweep), "--seed", "3")
    again, _ = report(capsys, str(sweep), "--seed", "3")
    other, _ = report(capsys, str(sweep), "--seed", "4")
    assert first.splitlines()[:-1] == again.splitlines()[:-1]
    assert first.splitlines()[:-1] != other.splitlines()[:-1]


def test_a_corrupt_result_is_named_and_skipped_while_others_remain(sweep: Path, capsys) -> None:
    write_trial(sweep, "int8-sweeping-7", "{not json")
    write_trial(sweep, "int8-sweeping-8", result("int8", "sweeping", 8, score=math.nan))
    out, err = report(capsys, str(sweep))
    assert len(err.strip().splitlines()) == 1
    assert "skipped 2 unusable result file(s)" in err
    assert "trials/int8-sweeping-7/result.json (not valid JSON" in err
    assert "trials/int8-sweeping-8/result.json ('score' is nan" in err
    assert str(stats.interval_estimate(expected_scores("int8"), reps=int(REPS), seed=0)) in out


def assert_one_line_in_process(capsys, args: list[str], needle: str) -> None:
    """main() as the console script calls it; argparse's own errors arrive as SystemExit."""
    try:
        code = main(["report", "--reps", REPS, *args])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda d: None, "no trial results in"),
        (lambda d: write_trial(d, "a", "{not json"), "no usable result in"),
        (lambda d: write_trial(d, "a", "[1, 2]"), "not a JSON object"),
        (
            lambda d: write_trial(d, "a", {k: v for k, v in result("int8", "sweeping", 0).items() if k != "score"}),
            "no 'score'",
        ),
        (lambda d: write_trial(d, "a", result("int8", "sweeping", 0, score=math.nan)), "'score' is nan"),
        (lambda d: write_trial(d, "a", '{"score": ' + "9" * 400 + "}"), "no usable result in"),
        (lambda d: write_trial(d, "a", "[" * 100_000), "nested too deeply"),
        (lambda d: write_trial(d, "a", result("int8", "sweeping", 0, score=10**400)), "'score' is inf"),
        (lambda d: write_trial(d, "a", result("int8", "sweeping", 0, status="done")), "'status' is 'done'"),
        (lambda d: write_trial(d, "a", result("int8", "sweeping", 0, metrics={"x": "fast"})), "metric 'x' is 'fast'"),
        (lambda d: write_trial(d, "a", result("int8", "sweeping", 0, status="failed")), "no trial of 1 has status ok"),
        (lambda d: write_trial(d, "a", result("int8", "sweeping", 0)), "1 scored run on task 'sweeping'"),
        (
            lambda d: [write_trial(d, n, result("int8", "sweeping", 0)) for n in ("a", "b")],
            "trials a and b are both group 'int8', task 'sweeping', seed 0",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_sweeps_end_in_one_line(tmp_path: Path, setup, needle: str, capsys) -> None:
    setup(tmp_path)
    assert_one_line_in_process(capsys, [str(tmp_path)], needle)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["/nonexistent/sweep"], "does not exist"),
        (["--baseline", "nope"], "--baseline 'nope' is not a group"),
        (["--confidence", "1"], "between 0 and 1"),
        (["--reps", "0"], "must be an integer >= 1"),
    ],
)
def test_bad_arguments_end_in_one_line(sweep: Path, args: list[str], needle: str, capsys) -> None:
    assert_one_line_in_process(capsys, args if args[0].startswith("/") else [str(sweep), *args], needle)


def test_the_installed_command_fails_the_same_way(tmp_path: Path) -> None:
    write_trial(tmp_path, "a", "{not json")
    assert_one_line_error(cli("report", str(tmp_path)), "no usable result in")


def test_help_states_every_default(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    for default in ("(default: DIR)", "(default: 2000)", "(default: 0)", "(default: 0.95)", "(default: every numeric"):
        assert default in text, default


def test_a_group_that_lost_a_whole_task_is_flagged_and_not_the_baseline(sweep: Path, capsys) -> None:
    """1bit fails every run on reactive: its IQM over the tasks it has would look best without the note."""
    for seed in SEEDS:
        write_trial(
            sweep, f"1bit-reactive-{seed}", {"group": "1bit", "task": "reactive", "seed": seed, "status": "failed"}
        )
    out, _ = report(capsys, str(sweep))
    assert "note: 1bit has no scored run on reactive" in out
    doc = json.loads((sweep / "report.json").read_text())
    assert doc["missing_tasks"] == {"1bit": ["reactive"]} and doc["baseline"] != "1bit"
