"""Double DQN with n-step returns, tuned for small networks on a CPU.

Reads top to bottom: collect with epsilon-greedy (numpy forward on the live weights), store
n-step rows, train on uniform minibatches (one flat parameter tensor, one fused Adam call),
evaluate greedily on separate seeds, keep the best policy as the IR, stop once the reward
threshold is confirmed. References: Mnih et al. 2015 (DQN), van Hasselt et al. 2016 (Double
DQN), Wang et al. 2016 (dueling), Sutton & Barto ch. 7 (n-step).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from edge_rl.evaluate import EvalResult, evaluate
from edge_rl.gymenv import env_specs, make_env
from edge_rl.policy import ObservationSpec, Policy
from edge_rl.train.config import DQNConfig
from edge_rl.train.optim import FlatAdam
from edge_rl.train.qnet import Arch, FlatQNet
from edge_rl.train.replay import NStepWriter, ReplayBuffer
from edge_rl.train.report import write_run

EVAL_SEED_OFFSET = 1_000_000  # evaluation seeds never coincide with training resets


@dataclass
class RunLog:
    """What a run produced, written to train.json."""

    episodes: list[tuple[int, float]] = field(default_factory=list)  # (env step at end, return)
    evals: list[dict[str, Any]] = field(default_factory=list)
    best_step: int = -1
    best_return: float = -np.inf
    stopped_early: bool = False
    steps: int = 0
    wall_seconds: float = 0.0


class DQN:
    """One training run: owns the envs, the network, the replay buffer and the log."""

    def __init__(self, cfg: DQNConfig) -> None:
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng(cfg.seed)
        self.envs = [make_env(cfg.env_id, cfg.env_kwargs) for _ in range(cfg.num_envs)]
        for i, env in enumerate(self.envs):
            env.action_space.seed(cfg.seed + i)
        self.raw_obs_spec, self.action_spec = env_specs(self.envs[0])
        self.obs_dim = self.raw_obs_spec.size
        self.n_actions = self.action_spec.n
        arch = Arch(self.obs_dim, self.n_actions, cfg.hidden, cfg.layernorm, cfg.activation, cfg.dueling)
        self.net = FlatQNet(arch, torch.Generator().manual_seed(cfg.seed))
        self.target = self.net.theta.detach().clone()
        self.target_views = self.net.views(self.target)  # stay valid: the target is updated in place
        self.adam = FlatAdam(self.net.theta.numel(), cfg.lr)
        self.buffer = ReplayBuffer(cfg.buffer_size, self.obs_dim, self.rng)
        self.writers = [NStepWriter(self.buffer, cfg.n_step, cfg.gamma) for _ in self.envs]
        self.obs_spec = self.raw_obs_spec  # replaced by the frozen normalisation
        self.frozen = False  # observation normalisation measured and fixed
        self.updates = 0
        self.log = RunLog()
        spec = self.envs[0].spec
        threshold = cfg.stop_reward if cfg.stop_reward is not None else getattr(spec, "reward_threshold", None)
        self.stop_reward = threshold if cfg.early_stop else None

    # -- acting -----------------------------------------------------------------------------------

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return self.obs_spec.normalize(obs) if self.frozen else obs

    def greedy(self, raw_obs: np.ndarray) -> np.ndarray:
        return self.net.q_numpy(self.normalize(raw_obs.reshape(len(raw_obs), -1))).argmax(axis=1)

    def epsilon(self, step: int) -> float:
        c = self.cfg
        frac = min(1.0, step / (c.eps_fraction * c.steps))
        return c.eps_start + frac * (c.eps_end - c.eps_start)

    def freeze_normalization(self) -> None:
        """Fix obs mean/var from the warm-up data, rewrite stored rows and bake them into the spec."""
        data = self.buffer.obs[: self.buffer.size]
        raw = self.raw_obs_spec
        mean, var = data.mean(0).reshape(raw.shape), data.var(0).reshape(raw.shape)
        spec = ObservationSpec(raw.shape, raw.low, raw.high, mean, var, names=raw.names)
        self.obs_spec, self.frozen = spec, True
        self.buffer.normalize_in_place(spec.normalize)
        for w in self.writers:
            w.map_obs(self.normalize)

    # -- learning ---------------------------------------------------------------------------------

    def update(self) -> None:
        """One gradient step on the Huber TD loss, then Adam, then (maybe) the target update."""
        c, net = self.cfg, self.net
        obs, action, ret, next_obs, discount = (torch.from_numpy(a) for a in self.buffer.sample(c.batch_size))
        q_next = net.forward(self.target_views if c.target_network else net.p, next_obs)
        if c.double and c.target_network:  # without a target network Double's two estimators are one
            v_next = q_next.gather(1, net.forward(net.p, next_obs).argmax(1, keepdim=True))
        else:
            v_next = q_next.max(1, keepdim=True).values
        tape: list = []
        q = net.forward(net.p, obs, tape)
        td = q.gather(1, action) - (ret + discount * v_next)
        # d/dq of mean Huber(td) (beta = 1), placed in the taken action's column
        dq = torch.zeros_like(q).scatter_(1, action, td.clamp_(-1.0, 1.0).div_(c.batch_size))
        grad = net.backward(tape, dq)
        if c.max_grad_norm > 0:
            grad.mul_(torch.clamp(c.max_grad_norm / (grad.norm() + 1e-6), max=1.0))
        self.adam.step(net.theta, grad)
        self.updates += 1
        if c.target_network and self.updates % c.target_update_interval == 0:
            self.target.lerp_(net.theta, c.tau)

    # -- evaluation -------------------------------------------------------------------------------

    def policy(self) -> Policy:
        meta = {
            "env_id": self.cfg.env_id,
            "env_kwargs": self.cfg.env_kwargs,
            "seed": self.cfg.seed,
            "trainer": "dqn",
            "gamma": self.cfg.gamma,  # the discount the Q-values are in: on-device learning continues with it
        }
        return self.net.to_policy(self.obs_spec, self.action_spec, meta)

    def evaluate(self, step: int, out: Path) -> EvalResult:
        c = self.cfg
        result = evaluate(self.greedy, c.env_id, c.eval_episodes, c.seed + EVAL_SEED_OFFSET, c.env_kwargs)
        entry = {"step": step, "mean_return": result.mean_return, "std_return": result.std_return}
        if result.success_rate is not None:  # tasks with a success notion (AntiJam) are judged on it
            entry["success_rate"] = result.success_rate
        self.log.evals.append(entry)
        with open(out / "evaluations.jsonl", "a", encoding="utf-8") as f:  # live progress: tail -f, sweeps poll it
            f.write(json.dumps(entry) + "\n")
        if result.mean_return > self.log.best_return:
            self.log.best_return, self.log.best_step = result.mean_return, step
            self.policy().save(out)  # best-so-far checkpoint survives an interrupted run
        return result

    def threshold_confirmed(self, result: EvalResult, step: int, out: Path) -> bool:
        """A passing evaluation is re-checked on as many fresh seeds; both together must pass.

        Twenty lucky episodes are not a solved task: stopping on one evaluation alone let
        policies through that scored below the threshold on the next twenty.
        """
        if self.stop_reward is None or result.mean_return < self.stop_reward:
            return False
        c = self.cfg
        seed = c.seed + EVAL_SEED_OFFSET + c.eval_episodes
        again = evaluate(self.greedy, c.env_id, c.eval_episodes, seed, c.env_kwargs)
        confirmed = (result.mean_return + again.mean_return) / 2 >= self.stop_reward
        if confirmed:  # the confirmed policy is the one to keep, even if an unconfirmed one tied it
            self.log.best_return, self.log.best_step = result.mean_return, step
            self.policy().save(out)
        return confirmed

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, out: str | Path, progress: bool = True) -> RunLog:
        c, out = self.cfg, Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluations.jsonl").unlink(missing_ok=True)  # a rerun into the same directory starts a new log
        n = c.num_envs
        obs = np.stack([env.reset(seed=c.seed + i)[0] for i, env in enumerate(self.envs)]).astype(np.float32)
        obs = obs.reshape(n, -1)
        ep_return, recent = np.zeros(n), []
        bar = tqdm(total=c.steps, unit="step", disable=not progress, dynamic_ncols=True, mininterval=0.5)
        step, next_eval, t0 = 0, c.eval_every or c.steps, time.perf_counter()
        while step < c.steps:
            eps = self.epsilon(step)
            actions = self.rng.integers(0, self.n_actions, n)
            if step >= c.learning_starts:
                explore = self.rng.random(n) < eps
                if not explore.all():
                    actions = np.where(explore, actions, self.greedy(obs))
            for i, env in enumerate(self.envs):
                next_obs, reward, terminated, truncated, _ = env.step(int(actions[i]))
                next_obs = np.asarray(next_obs, np.float32).ravel()
                self.writers[i].push(
                    self.normalize(obs[i]),
                    int(actions[i]),
                    float(reward),
                    self.normalize(next_obs),
                    terminated,
                    truncated,
                )
                ep_return[i] += reward
                if terminated or truncated:
                    self.log.episodes.append((step + i + 1, float(ep_return[i])))
                    recent = [*recent[-19:], ep_return[i]]
                    ep_return[i] = 0.0
                    next_obs = np.asarray(env.reset()[0], np.float32).ravel()
                obs[i] = next_obs
            step += n
            if c.normalize_obs and not self.frozen and step >= c.learning_starts:
                self.freeze_normalization()
            if step >= c.learning_starts and (step // n) % c.train_freq == 0:
                for _ in range(c.gradient_steps):
                    self.update()
            if step >= next_eval or step >= c.steps:
                next_eval += c.eval_every or c.steps
                result = self.evaluate(step, out)
                bar.set_postfix_str(f"eval {result.mean_return:.1f} best {self.log.best_return:.1f}", refresh=False)
                if self.threshold_confirmed(result, step, out):
                    self.log.stopped_early = step < c.steps
                    bar.update(step - bar.n)
                    break
            if bar.n + 1000 <= step:
                sps = step / (time.perf_counter() - t0)
                ret = f"{np.mean(recent):.1f}" if recent else "-"
                bar.set_description(f"ret {ret} eps {eps:.2f} {sps:,.0f} sps", refresh=False)
                bar.update(step - bar.n)
        bar.close()
        self.log.steps, self.log.wall_seconds = step, time.perf_counter() - t0
        for env in self.envs:
            env.close()
        write_run(out, self.cfg, self.log, updates=self.updates)
        return self.log


def train_dqn(cfg: DQNConfig, out: str | Path, progress: bool = True) -> tuple[Policy, RunLog]:
    """Train, write the run directory (best policy IR, train.json, curve.png) and return the best policy."""
    log = DQN(cfg).run(out, progress)
    return Policy.load(out), log
