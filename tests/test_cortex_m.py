"""The Cortex-M firmware on an emulated LM3S6965 (qemu-system-arm): exported policy.h files run bare metal
and answer OBS frames over the emulated UART with exactly the IR's actions, refuse to act from a policy
whose golden self-test fails, fit the 32 KB / 8 KB budget, and relay a plant to a real `edge-rl run`.

Every firmware is built once per session (two at a time); each test boots its own QEMU.
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from edge_rl.card import model_card
from edge_rl.policy import Policy
from edge_rl.rollout import collect_states
from edge_rl.stream.adapt import from_policy
from export.c_header import to_c_header
from export.exporter import export_bundle
from firmware_bridge.protocol import Capability, ErrorCode, Obs, encode
from firmware_bridge.qemu import Firmware, Plant, boot, build_firmware, count_instructions, symbol
from tests.head_learning import (
    Frozen,
    assert_equivalent,
    jammer_switch,
    jammer_switch_on_the_mcu,
    record,
    teacher_forced,
)
from tests.policies import case_for

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = 64
CASES = [
    f"{env}-{precision}"
    for env, precision in [("antijam", "int8"), ("antijam", "1bit"), ("cartpole", "int8"), ("cartpole", "fp32")]
]


@dataclass(frozen=True)
class Case:
    policy: Policy
    states: np.ndarray  # held-out states the policy visits; the first GOLDEN are in its header
    firmware: Firmware


@dataclass(frozen=True)
class Rig:
    cases: dict[str, Case]
    tampered: Firmware  # AntiJam int8 with three wrong golden actions in its header
    bundle: Path  # the exported AntiJam int8 bundle whose policy.h cases["antijam-int8"] runs


def write_header(path: Path, policy: Policy, golden: np.ndarray, actions: np.ndarray) -> Path:
    path.write_text(to_c_header(policy, golden, actions))
    return path


@pytest.fixture(scope="session")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Rig:
    root = tmp_path_factory.mktemp("cortex_m")
    policies = {name: case_for(*name.split("-"))[1:] for name in CASES}
    policy, states = policies["antijam-int8"]
    bundle, _ = export_bundle(policy, root / "bundle", ["c"], states[:GOLDEN])
    headers = {"antijam-int8": bundle / "policy.h"}
    for name, (other, seen) in policies.items():
        if name not in headers:
            headers[name] = write_header(root / f"{name}.h", other, seen[:GOLDEN], other.act(seen[:GOLDEN]))
    wrong = policy.act(states[:GOLDEN])
    wrong[:3] = (wrong[:3] + 1) % policy.action.n
    headers["tampered"] = write_header(root / "tampered.h", policy, states[:GOLDEN], wrong)
    with ThreadPoolExecutor(2) as pool:
        futures = {name: pool.submit(build_firmware, h, root / "build", name) for name, h in headers.items()}
        built = {name: future.result() for name, future in futures.items()}
    cases = {name: Case(policy, states, built[name]) for name, (policy, states) in policies.items()}
    return Rig(cases, built["tampered"], bundle)


# --- local mode: the policy on the MCU answers ------------------------------------------------------------


@pytest.mark.parametrize("name", CASES)
def test_the_firmware_boots_and_says_its_policy_passed_its_self_test(rig: Rig, name: str) -> None:
    case = rig.cases[name]
    with boot(case.firmware.elf) as machine:
        hello = Plant(machine.port(0)).hello()
    assert hello.device_id == "cortex-m3"
    assert Capability.POLICY in hello.capabilities and Capability.SELF_TEST_PASSED in hello.capabilities
    observation, action = case.policy.observation, case.policy.action
    assert (hello.obs_shape, hello.n_actions, hello.safe_action) == ((observation.size,), action.n, action.safe)


def episode_ends(n: int, every: int = 97) -> dict[int, tuple[bool, bool]]:
    """Step -> (terminated, truncated) for the OBS that end episodes, both kinds in turn."""
    return {i: (k % 2 == 0, k % 2 == 1) for k, i in enumerate(range(every - 1, n, every))}


@pytest.mark.parametrize("name", ["antijam-int8", "antijam-1bit"])
def test_1000_observations_get_exactly_the_irs_actions_over_the_uart(rig: Rig, name: str) -> None:
    """Held-out states; the OBS ending an episode gets no ACTION, the next one starts the next episode."""
    case = rig.cases[name]
    states = case.states[1000:2000]
    expected = case.policy.act(states)
    ends = episode_ends(len(states))
    with boot(case.firmware.elf) as machine:
        plant = Plant(machine.port(0))
        plant.hello()
        answers = [plant.act(s, 1.0, *ends.get(i, (False, False))) for i, s in enumerate(states)]
        assert not plant.errors
    assert all(answers[i] is None for i in ends)
    differ = [i for i, a in enumerate(answers) if i not in ends and a != (expected[i], False)]
    assert not differ, f"{len(differ)} of {len(states)} actions differ from the IR's, first at steps {differ[:5]}"


def test_a_header_with_wrong_golden_actions_never_acts_from_its_policy(rig: Rig) -> None:
    case = rig.cases["antijam-int8"]
    with boot(rig.tampered.elf) as machine:
        plant = Plant(machine.port(0))
        hello = plant.hello()
        error = plant.wait_error()
        answers = {plant.act(s) for s in case.states[1000:1100]}
    assert Capability.POLICY in hello.capabilities and Capability.SELF_TEST_PASSED not in hello.capabilities
    assert (error.code, error.text) == (ErrorCode.SELF_TEST_FAILED, f"self-test: 3 of {GOLDEN} golden actions differ")
    assert answers == {(case.policy.action.safe, True)}


def test_invalid_input_gets_the_safe_action_or_an_error_and_a_bad_frame_is_ignored(rig: Rig) -> None:
    case = rig.cases["antijam-int8"]
    safe, state = case.policy.action.safe, case.states[1000]
    (expected,) = case.policy.act(state[None])
    with boot(case.firmware.elf) as machine:
        plant = Plant(machine.port(0))
        plant.hello()
        for bad in (np.nan, np.inf, -np.inf):
            observation = state.copy()
            observation[7] = bad
            assert plant.act(observation) == (safe, True), bad
        frame = bytearray(encode(Obs(state), 999))
        frame[len(frame) // 2] ^= 0x40  # the CRC no longer matches
        machine.port(0).write(bytes(frame))
        assert plant.act(state) == (expected, False)  # answered, and nothing answered the corrupted frame
        for key, value, code in [
            ("learn", 2.0, ErrorCode.BAD_CONFIG_VALUE),
            ("epsilon", 1.5, ErrorCode.BAD_CONFIG_VALUE),
            ("no-such-key", 1.0, ErrorCode.UNKNOWN_CONFIG),
            ("mode", 2.0, ErrorCode.BAD_CONFIG_VALUE),
            ("deadline_ms", 0.5, ErrorCode.BAD_CONFIG_VALUE),
        ]:
            plant.configure(key, value)
            error = plant.wait_error()
            assert error.code == code and key in error.text, error
        assert plant.act(state) == (expected, False)
        assert not plant.errors[5:]


def test_the_budget_build_fits_32k_flash_and_8k_ram(rig: Rig, tmp_path: Path) -> None:
    """The link is the proof (a region that overflows fails it); the figures go into the message."""
    budget = build_firmware(rig.bundle / "policy.h", tmp_path, "antijam-int8", "budget")
    figures = f"text={budget.text} data={budget.data} bss+stack={budget.bss}: flash {budget.flash}, RAM {budget.ram}"
    print(f"AntiJam int8 budget build: {figures}")
    assert budget.flash <= 32 * 1024 and budget.ram <= 8 * 1024, figures
    with boot(budget.elf) as machine:
        hello = Plant(machine.port(0)).hello()
    assert Capability.SELF_TEST_PASSED in hello.capabilities, figures


# --- remote mode: the MCU relays its plant to a daemon ----------------------------------------------------


def test_remote_mode_relays_the_plant_to_edge_rl_run_and_falls_back_when_it_stops(rig: Rig, tmp_path: Path) -> None:
    case = rig.cases["antijam-int8"]
    states, safe = case.states[2000:2300], case.policy.action.safe
    ends = episode_ends(len(states), 50)
    config = tmp_path / "daemon.toml"
    # the daemon's own budget, and its staleness check, loose: an emulated clock loses SysTick ticks while a
    # loaded host starves QEMU (seen: OBS 0.5 s "late" by the guest's clock with a second QEMU running)
    config.write_text("[control]\ndeadline_ms = 1000\nstale_ms = 10000\n")
    with boot(case.firmware.elf, uarts=2) as machine:
        Plant(machine.port(0)).configure("mode", 1)
        plant = Plant(machine.port(1))
        plant.hello()  # answered on UART1: the switch is done
        plant.configure("deadline_ms", 500)  # the MCU's wait for the daemon's ACTION, idem
        link = f"serial://{machine.release(0)}"
        run = [sys.executable, "-m", "edge_rl.cli", "run", str(rig.bundle), "--link", link, "--config", str(config)]
        daemon = subprocess.Popen(
            [*run, "--backend", "numpy"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            deadline = time.monotonic() + 60
            while plant.act(states[0]) != (case.policy.act(states[:1])[0], False):
                assert daemon.poll() is None and time.monotonic() < deadline, (
                    "the daemon never answered through the MCU"
                )
            answers = [plant.act(s, 1.0, *ends.get(i, (False, False))) for i, s in enumerate(states)]
        finally:
            daemon.terminate()
            output, _ = daemon.communicate(timeout=30)
        stopped = time.monotonic()
        while (answer := plant.act(states[0])) != (safe, True):
            assert time.monotonic() - stopped < 3, f"still {answer} from the stopped daemon"
        fallback_s = time.monotonic() - stopped
        assert not plant.errors
    assert daemon.returncode == 0, output[-2000:]
    expected = case.policy.act(states)
    differ = [i for i, a in enumerate(answers) if i not in ends and a != (expected[i], False)]
    got = [answers[i] for i in differ[:5]]
    assert not differ and all(answers[i] is None for i in ends), f"steps {differ[:5]}: {got}, not the IR's; {output}"
    print(f"safe action with the fallback flag {fallback_s:.2f} s after the daemon stopped")


# --- on-MCU learning: the head adapts on the device --------------------------------------------------------


@pytest.mark.parametrize("name", ["antijam-int8", "antijam-1bit", "cartpole-fp32"])
def test_the_mcu_learns_its_head_as_the_numpy_head_learner_does(rig: Rig, name: str) -> None:
    """1,000 teacher-forced frames: the MCU's greedy actions and, read from its RAM, its head."""
    case = rig.cases[name]
    frames = record(case.policy, 1000, seed=11)
    with boot(case.firmware.elf) as machine:
        plant = Plant(machine.port(0))
        plant.hello()
        plant.configure("epsilon", 0.0)
        plant.configure("learn", 1.0)
        actions = teacher_forced(plant, frames)
        plant.hello()  # answered only after the last frame's learning step: the head is final
        head = from_policy(case.policy, "head").net.theta.size  # learner_mem starts with the head
        theta = machine.read_floats(symbol(case.firmware.elf, "learner_mem"), head)
    assert not plant.errors
    print(f"{name}: max |d theta| / max |theta| = {assert_equivalent(case.policy, frames, actions, theta):.2g}")


SWITCH_STEPS, SWITCH_AT, LATE = 12_000, 2_000, 8_000


def switch_on_the_mcu(policy: Policy, out: Path, seed: int) -> float:
    """Late success (slots 8,000-12,000) of the MCU learning its head; the jammer turns reactive at slot 2,000."""
    out.mkdir()
    header = write_header(out / "policy.h", policy, *golden_of(policy))
    success = jammer_switch_on_the_mcu(build_firmware(header, out).elf, SWITCH_STEPS, SWITCH_AT, seed)
    return float(success[LATE:].mean())


def golden_of(policy: Policy) -> tuple[np.ndarray, np.ndarray]:
    states = collect_states(policy.act, "edge_rl/AntiJam-v0", GOLDEN, 0, 0.1, {"jammer": "sweeping"})
    return states, policy.act(states)


@pytest.mark.learning
def test_the_mcu_recovers_from_a_jammer_switch_by_learning_its_head(antijam_int8: list[Policy], tmp_path: Path) -> None:
    """int8 policies trained on the sweeping jammer meet a reactive one at slot 2,000: frozen they
    collapse; learning on the MCU they recover to >= 80 % of the new best (1.0) by slots 8k-12k,
    on average over the three teachers (measured figures: firmware_bridge/firmware/cortex_m/README.md)."""
    teachers = antijam_int8  # one after another: each QEMU run is ~40 s alone, 3x slower sharing 2 cores
    runs = [switch_on_the_mcu(p, tmp_path / f"t{i}", i) for i, p in enumerate(teachers)]
    frozen = [float(jammer_switch(Frozen(p), SWITCH_STEPS, SWITCH_AT, i)[LATE:].mean()) for i, p in enumerate(teachers)]
    print(f"late success: learning on the MCU {runs}, frozen {frozen}")
    assert np.mean(runs) >= 0.8 * 1.0 and np.mean(runs) - np.mean(frozen) >= 0.3, (runs, frozen)


def test_the_instruction_benchmark_counts_a_known_loop_exactly(rig: Rig, tmp_path: Path) -> None:
    """benchmarks/mcu.py's image under -icount shift=0 (count_instructions refuses a run whose 10-million-
    instruction loop did not take 10 guest ms); a decision takes more instructions than it has MACs."""
    macs = model_card(rig.cases["antijam-int8"].policy)["macs"]
    counted = count_instructions(build_firmware(rig.bundle / "policy.h", tmp_path, "aj", "bench").elf)
    assert macs < counted.decision < counted.learning_step and 0 < counted.update < counted.learning_step, counted
