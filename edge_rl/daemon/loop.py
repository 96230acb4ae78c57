"""The control loop: receive, validate, act, send; then learn, gate, checkpoint, report.

Reads top to bottom like the step it runs. The action for an OBS is computed and sent before
anything else happens for it: learning, gating, checkpoints (handed to a thread), events
(queued for a thread) and config reloads come after the ACTION is out. Every step that sends the
bundle's safe action instead of the policy's says why, in a counter and in the event log (one
event when fallback starts and one when it ends, not one per step).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_rl.bundle import Bundle
from edge_rl.daemon import config as config_file
from edge_rl.daemon.checkpoint import CheckpointStore
from edge_rl.daemon.config import DaemonConfig
from edge_rl.daemon.events import EventLog
from edge_rl.daemon.gate import Candidate, Gate
from edge_rl.daemon.guard import InputGuard, RewardEnvelope, Shield
from edge_rl.daemon.interval import Interval, ring_since
from edge_rl.daemon.operator import answer, bundle_status, telemetry_sample
from edge_rl.daemon.service import Notifier, Signals
from edge_rl.daemon.shadow import ShadowLearner
from edge_rl.daemon.snapshot import Persister
from edge_rl.daemon.source import BundleCheck, BundleSource, record_installed
from edge_rl.daemon.state import capture, restore_into
from edge_rl.errors import BadInput
from edge_rl.runtime.backends import Backend
from firmware_bridge import Link
from firmware_bridge.protocol import Action, Error, Obs

if TYPE_CHECKING:
    from edge_rl.telemetry.publish import Publisher

RECENT = 256  # recent valid observations the gate checks candidates on
LATENCIES = 4096  # per-step timings kept for the summary (a ring)
IDLE_WAIT = 0.02  # seconds `recv` may wait when nothing comes: heartbeats and reloads still run
COMMANDS_PER_PASS = 4  # operator commands applied between two steps (the rest wait for the next pass)


@dataclass
class LoopCounters:
    steps: int = 0  # OBS answered (policy or safe action), terminal OBS excluded
    policy_actions: int = 0
    safe_actions: int = 0
    fallbacks: Counter[str] = field(default_factory=Counter)  # why the safe action was sent
    unsent: int = 0  # ACTIONs the link refused (peer not ready)
    terminal: int = 0  # episode ends seen
    transitions: int = 0  # valid transitions handed to the learner / gate
    gaps: int = 0  # transitions dropped because a frame was lost or damaged between their two OBS
    late: int = 0  # iterations slower than the idle wait plus the deadline (no watchdog ping after them)
    explored: int = 0  # policy steps that took a random allowed action (adapting only)
    bad_rewards: int = 0  # non-finite rewards: their transitions are dropped
    reward_sum: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k != "fallbacks"}
        return {**d, "fallbacks": dict(self.fallbacks)}


class Daemon:
    """One bundle, one link, one state directory: `run()` until stopped, then a final checkpoint."""

    def __init__(
        self,
        bundle: Bundle,
        actor: Backend,
        link: Link,
        config: DaemonConfig,
        events: EventLog,
        state_dir: Path | None = None,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        signals: Signals | None = None,
        source: BundleSource | None = None,
        telemetry: Publisher | None = None,
    ) -> None:
        """`source` says where the bundle came from and how it was checked: a reload checks it again."""
        self.link, self.events, self.telemetry = link, events, telemetry
        self.config, self.config_path = config, config_path
        self.notifier = notifier or Notifier()
        self.signals = signals or Signals()
        self.source = source
        self.mode = config.adapt.mode
        self.counters = LoopCounters()
        self.latency = np.zeros(LATENCIES)  # seconds from OBS received to ACTION written
        self.arrivals = np.zeros(LATENCIES)  # monotonic time each OBS arrived (terminal ones too)
        self.n_obs = 0
        self.paused = False  # adaptation paused by an operator's command
        self.epsilon_override: float | None = None  # set by an operator's command, until the next config reload
        self.boot_steps = 0  # steps answered before this boot (resumed counters): the rings start after them
        self.interval = Interval(config.telemetry.success_reward)
        self.sampled = (time.monotonic(), 0, 0)  # (when, steps, OBS) at the previous telemetry sample
        self.in_fallback: str | None = None
        self.link_state = ""
        self.telemetry_s = 0.0  # time the loop spent handing telemetry over (samples, commands, notices)
        self.ready_sent = False
        self.store = CheckpointStore(state_dir, config.checkpoint.keep) if state_dir is not None else None
        self.persister: Persister | None = None
        self.next_checkpoint = math.inf
        self.checkpoint_backoff = 1
        self.checkpoint_alarm = False
        self.pending_bundle: BundleCheck | None = None
        self._install(bundle, actor)

    def _install(self, bundle: Bundle, actor: Backend) -> None:
        """Everything that depends on the bundle: guard, shield, learner, gate (at start and on a new bundle)."""
        self.bundle, self.policy = bundle, bundle.policy
        self.safe = self.policy.action.safe
        self.guard = InputGuard(self.policy.observation, self.config.control)
        self.shield = Shield(self.policy.action.n, self.safe, self.config.control)
        adapt = self.config.adapt
        self.shadow = ShadowLearner(self.policy, self.mode, adapt) if self.mode != "off" else None
        self.rng = np.random.default_rng(adapt.seed)  # exploration draws (never while not learning)
        self.rewards = RewardEnvelope(adapt.reward_warmup)
        self.reward_suspect = False
        golden = bundle.golden.observations
        self.gate = Gate(self.policy, actor, golden, adapt, self.events.emit, self._reset_learner)
        self.recent = np.zeros((RECENT, self.policy.observation.size), np.float32)
        self.n_recent = 0
        self.prev: tuple[np.ndarray, int, int] | None = None  # (observation, action, frames lost) of a policy step

    # -- start ------------------------------------------------------------------------------------
    def resume(self) -> None:
        """Load the newest valid checkpoint of this bundle (if any) and start the checkpoint writer."""
        if self.store is None:
            return
        recovered, lines = self.store.recover()
        for line in lines:
            self.events.emit("checkpoint_recovery", detail=line)
        if recovered is not None:
            try:
                restore_into(self, recovered.payload)
                self.events.emit("resumed", generation=recovered.generation, step=self.counters.steps)
            except BadInput as e:
                self.events.emit("not_resumed", generation=recovered.generation, reason=str(e))
        self.persister = Persister(self.store)
        self.next_checkpoint = time.monotonic() + self.config.checkpoint.interval_s
        self.boot_steps = self.counters.steps
        self.sampled = (time.monotonic(), self.counters.steps, self.n_obs)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, steps: int = 0) -> None:
        """Until a stop signal (or `steps` more answered OBS); `stop()` then saves and reports."""
        target = self.counters.steps + steps if steps else 0
        clock = time.monotonic
        while self.signals.stop is None and (not target or self.counters.steps < target):
            started = clock()
            msg = self.link.recv(IDLE_WAIT)
            if isinstance(msg, Obs):
                self._step(msg, clock())
            # on time: no longer than the idle wait plus one step's budget (a stall anywhere, even in a read, is late)
            on_time = clock() - started <= IDLE_WAIT + self.config.control.deadline_ms / 1000
            self.counters.late += not on_time
            if on_time and self.ready_sent:
                self.notifier.alive(clock())
            if isinstance(msg, Error):
                self.events.emit("device_error", code=int(msg.code), text=msg.text)
            self._housekeeping()

    def _step(self, obs: Obs, received: float) -> None:
        """Answer one OBS with an ACTION, then learn from the transition it completes."""
        c, x = self.counters, obs.observation
        self.arrivals[self.n_obs % LATENCIES] = received
        self.n_obs += 1
        invalid = self.guard.check(x, obs.t_us, received)
        done = obs.terminated or obs.truncated
        action, reason = self.safe, None  # a terminal OBS is not answered: the device starts the next episode
        if not done:
            reason = invalid
            if invalid is None:
                action, reason = self._policy_action(x)
            if reason is None and time.monotonic() - received > self.config.control.deadline_ms / 1000:
                action, reason = self.safe, "deadline"
            if reason is not None:
                self.shield.hold(self.safe)
            sent = self.link.send(Action(action, obs.seq, self.config.control.valid_ms, reason is not None))
            self.latency[c.steps % LATENCIES] = time.monotonic() - received
            c.steps += 1
            c.unsent += sent is None
            c.policy_actions += reason is None
            c.safe_actions += reason is not None
        # -- the ACTION is out: everything below may take its time --------------------------------
        self._fallback_events(reason)
        lost = self._lost_frames()  # read once: it marks both ends of a transition
        self._learn(obs, invalid, done, lost)
        if done:
            c.terminal += 1
            self.interval.episode_end()
            self.prev = None
            self.shield.forget()
        elif invalid is None and reason is None:
            self.prev = (x.copy(), action, lost)
        else:
            self.prev = None  # a fallback step's outcome is not the policy's: no transition from it

    def _policy_action(self, x: np.ndarray) -> tuple[int, str | None]:
        try:
            q = self.gate.actor.q_values(x)
        except (BadInput, RuntimeError) as e:  # a runtime that fails mid-run: the bundle's safe action
            self.events.emit("inference_error", error=str(e)[:200])
            return self.safe, "inference"
        if not np.isfinite(q).all():
            return self.safe, "nonfinite_q"
        if self.shadow is not None and not self.paused and self.gate.learning and self.rng.random() < self.epsilon:
            self.counters.explored += 1
            return self.shield.explore(self.rng), None
        return self.shield.choose(q), None

    def set_epsilon(self, value: float) -> None:
        """An operator's exploration rate, in force also while recovering, until the config is reloaded."""
        self.epsilon_override = value
        self.config = replace(self.config, adapt=replace(self.config.adapt, explore=value, explore_recovering=value))

    @property
    def epsilon(self) -> float:
        """The chance of a random allowed action per step now (0 when not adapting)."""
        if self.shadow is None or self.paused or not self.gate.learning:
            return 0.0
        adapt = self.config.adapt
        return adapt.explore_recovering if self.gate.recovering else adapt.explore

    def _learn(self, obs: Obs, invalid: str | None, done: bool, lost: int) -> None:
        """The transition from the previous policy step to this OBS, if both ends are valid and adjacent.

        `lost` is the link's count of lost or damaged frames now; the previous step recorded its own.
        """
        prev, c = self.prev, self.counters
        if prev is None or invalid is not None:
            return
        x_prev, action, lost_before = prev
        if lost != lost_before:
            c.gaps += 1  # a frame went missing since the previous OBS: it may have been an OBS
            return
        reward = float(obs.reward)
        if not math.isfinite(reward):
            c.bad_rewards += 1
            return
        c.transitions += 1
        c.reward_sum += reward
        self.interval.transition(reward)
        x = obs.observation.reshape(-1)
        self.recent[self.n_recent % RECENT] = x
        self.n_recent += 1
        if self.shadow is None:
            return
        inside = self.rewards.check(reward)
        suspect = self.rewards.suspect
        if suspect != self.reward_suspect:
            self.reward_suspect = suspect
            self.events.emit(
                "reward_suspect" if suspect else "reward_trusted", low=self.rewards.low, high=self.rewards.high
            )
        if inside and not suspect and not self.paused and self.gate.learning:
            started = time.perf_counter()
            td_error = self.shadow.learn(x_prev, action, reward, x, obs.terminated, obs.truncated)
            self.interval.learned(time.perf_counter() - started, td_error)
        trusted = not suspect and not self.paused  # paused: no trial starts, a running one is cancelled
        self.gate.after_step(reward, done, self.shadow.candidate, self._recent, trusted=trusted)

    def _lost_frames(self) -> int:
        """Frames the link saw go missing or arrive damaged so far (any of them may have been an OBS)."""
        n = self.link.transport.counters()
        return sum(n.get(k, 0) for k in ("seq_gaps", "crc_errors", "malformed", "oversize"))

    def _recent(self) -> np.ndarray:
        n = min(self.n_recent, RECENT)
        return np.roll(self.recent, -(self.n_recent % RECENT), axis=0)[-n:] if n else self.recent[:0]

    def _reset_learner(self, candidate: Candidate | None) -> None:
        if self.shadow is not None:
            self.shadow.reset(candidate)

    def _fallback_events(self, reason: str | None) -> None:
        if reason is not None:
            self.counters.fallbacks[reason] += 1
        if reason != self.in_fallback:
            if self.in_fallback is not None:
                self.events.emit("fallback_ended", reason=self.in_fallback)
            if reason is not None:
                self.events.emit("safe_action", reason=reason, step=self.counters.steps)
            self.in_fallback = reason

    # -- between steps ----------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        self._link_events()
        t = self.telemetry
        if t is not None and (
            t.notices or t.commands or time.monotonic() - self.sampled[0] >= self.config.telemetry.interval_s
        ):
            started = time.thread_time()  # this thread's CPU: waiting for the GIL is not telemetry's work
            self._telemetry()
            self.telemetry_s += time.thread_time() - started
        if self.signals.reload:
            self.signals.reload = False
            self.reload()
        if self.pending_bundle is not None and self.pending_bundle.done:
            self._switch_bundle(self.pending_bundle)
            self.pending_bundle = None
        if self.persister is not None:
            self._checkpoint_results()
            if time.monotonic() >= self.next_checkpoint:
                self.checkpoint()

    def _link_events(self) -> None:
        while self.link.events:
            event = self.link.events.popleft()
            self.events.emit("link", detail=str(event), state=event.state.value, at=round(event.t, 6))
        state = self.link.state.value
        if state != self.link_state:
            self.link_state = state
            if state != "ready":
                self.prev = None  # no transition spans a lost link
                self.guard.reset_clock()
                self.shield.forget()
            elif not self.ready_sent:
                self.ready_sent = True
                self.notifier.ready(f"acting from bundle v{self.bundle.version} with --adapt {self.mode}")

    def reload(self) -> None:
        """SIGHUP: the config and the bundle again; each applied whole, or the running one kept with the reason."""
        self._reload_config()
        if self.source is not None and self.pending_bundle is None:
            self.pending_bundle = BundleCheck(self.source, self.bundle)  # verified in a thread: no control gap

    def _reload_config(self) -> None:
        try:
            new = config_file.load(self.config_path)
            if new.adapt.mode != self.mode and new.adapt.mode != "off":
                raise BadInput(f"[adapt] mode {new.adapt.mode!r}: changing the mode needs a restart")
            new = new.with_mode(self.mode)  # a file without a mode keeps the one --adapt gave
            Shield(self.policy.action.n, self.safe, new.control)  # refuses a mask that cannot work
        except BadInput as e:
            self.events.emit("config_rejected", reason=str(e))
            return
        self.config, self.epsilon_override = new, None
        self.guard.configure(new.control)
        self.shield.configure(new.control)
        self.gate.configure(new.adapt)
        if self.persister is not None:
            self.next_checkpoint = min(self.next_checkpoint, time.monotonic() + new.checkpoint.interval_s)
        self.events.emit("config_reloaded", path=str(self.config_path))

    def _switch_bundle(self, check: BundleCheck) -> None:
        """Act from a newly verified bundle (its learner starts afresh), or say why the old one stays."""
        if check.error is not None:
            self.events.emit("bundle_rejected", reason=check.error, exit_code=check.exit_code, kept=self.bundle.version)
            return
        if check.result is None:
            return  # unchanged on disk
        actor, bundle = check.result
        old_actor, old_version = self.gate.bundle_actor, self.bundle.version
        if self.gate.actor is not old_actor:
            self.gate.actor.close()
        self._install(bundle, actor)
        old_actor.close()
        self.shield.forget()
        if self.telemetry is not None:
            self.telemetry.status(**bundle_status(bundle, self.mode))
        if self.store is not None:
            record_installed(self.store.directory, bundle)
        self.events.emit("bundle_updated", version=bundle.version, previous=old_version, signer=bundle.signer)
        self.checkpoint()

    # -- telemetry and the operator's commands ----------------------------------------------------
    def _telemetry(self) -> None:
        assert self.telemetry is not None
        while self.telemetry.notices:
            kind, fields = self.telemetry.notices.popleft()
            self.events.emit(kind, **fields)
        for _ in range(COMMANDS_PER_PASS):
            if not self.telemetry.commands:
                break
            answer(self, self.telemetry.commands.popleft())
        now = time.monotonic()
        if now - self.sampled[0] >= self.config.telemetry.interval_s:
            self.telemetry.sample(telemetry_sample(self, now))

    def checkpoint(self) -> None:
        """Hand a copy of the state to the writer thread (never waits for the disk)."""
        if self.persister is None:
            return
        meta, states = capture(self)
        self.persister.submit(meta, states)
        interval = self.config.checkpoint.interval_s * self.checkpoint_backoff
        self.next_checkpoint = time.monotonic() + interval

    def _checkpoint_results(self) -> None:
        assert self.persister is not None
        for generation, error in self.persister.results():
            if error is None:
                if self.checkpoint_alarm:
                    self.events.emit("checkpoint_recovered", generation=generation)
                self.checkpoint_alarm, self.checkpoint_backoff = False, 1
                self.events.emit("checkpoint", generation=generation, step=self.counters.steps)
            else:
                if not self.checkpoint_alarm:  # one alarm per run of failures, then quiet back-off
                    self.events.emit("checkpoint_failed", reason=error, kept_generation=self.store.generation)
                self.checkpoint_alarm = True
                self.checkpoint_backoff = min(self.checkpoint_backoff * 2, 64)
                interval = self.config.checkpoint.interval_s * self.checkpoint_backoff
                self.next_checkpoint = time.monotonic() + interval

    def stop(self) -> None:
        """Final checkpoint (waited for, bounded), then the link closes: the device's deadman takes over."""
        self.notifier.stopping()
        if self.pending_bundle is not None:
            self.pending_bundle.abandon()
            self.pending_bundle = None
        if self.persister is not None:
            self.checkpoint()
            if not self.persister.flush(10.0):
                self.events.emit("checkpoint_failed", reason="the final checkpoint did not finish within 10 s")
            self._checkpoint_results()
            self.persister.close()
        if self.gate.actor is not self.gate.bundle_actor:
            self.gate.actor.close()
        if self.telemetry is not None:
            self.telemetry.sample(telemetry_sample(self, time.monotonic()))  # the last interval too
        self.events.emit("stopped", steps=self.counters.steps, signal=self.signals.stop)

    def summary(self) -> dict[str, Any]:
        steps = self.counters.steps
        lat = ring_since(self.latency, self.boot_steps, steps) * 1e6 if steps > self.boot_steps else np.zeros(1)
        return {
            **self.counters.as_dict(),
            "latency_p50_us": float(np.percentile(lat, 50)),
            "latency_p99_us": float(np.percentile(lat, 99)),
            "gate": {"phase": self.gate.phase, **vars(self.gate.counters)},
            "learner": self.shadow.counters() if self.shadow else {},
            "incumbent": self.gate.incumbent_policy().digest()[:16],
            "link": self.link.counters(),
            "watchdog_pings": self.notifier.pings,
            "telemetry_loop_ms": round(1000 * self.telemetry_s, 3),
        }
