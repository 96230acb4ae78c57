"""Policy distillation: a teacher IR into a small student, optionally quantized (int8 or 1-bit).

Loss (Rusu et al. 2016, with a Q term for the device learner): KL between softmax(Q_teacher/tau)
and softmax(Q_student/tau) with a small tau (sharp: the greedy action is what matters), plus a
Huber regression on the Q-values themselves, so the student's Q stay calibrated for on-device
TD learning. States: teacher rollouts with epsilon noise, then DAgger rounds (Ross et al. 2011)
on the student's own state distribution, labelled by the teacher. A quantized student warm-starts
in fp32 for `fp32_rounds`, has its channel ranges equalised (`quantize.equalize`), then trains
through its deploy form (`quantize.qat`: int8 fake quantization, QuEST 1-bit hidden layers) and
is converted with the activation ranges it trained with.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from edge_rl.atomic import write_atomic
from edge_rl.errors import BadInput
from edge_rl.evaluate import evaluate
from edge_rl.layers import Activation, Dense, LayerNorm
from edge_rl.policy import ActionSpec, ObservationSpec, Policy
from edge_rl.rollout import collect_states
from quantize.convert import default_plan, quantize_policy
from quantize.equalize import equalize_ranges
from quantize.int8 import activation_qparams
from quantize.qat import BinaryLinear, fake_quant_activation, fake_quant_split_head, fake_quant_weight

QUANT_MODES = ("none", "int8", "1bit")


@dataclass
class DistillConfig:
    hidden: tuple = (32, 32)
    quant: str = "none"
    steps: int = 20_000  # gradient steps over all rounds
    seed: int = 0
    rounds: int = 4
    fp32_rounds: int = 1  # quantized students: rounds trained in fp32 before quantization-aware training
    teacher_states: int = 20_000
    dagger_states: int = 10_000
    validation_states: int = 10_000
    teacher_epsilon: float = 0.1
    student_epsilon: float = 0.05
    tau: float = 0.01
    kl_weight: float = 1.0
    q_weight: float = 0.1
    lr: float = 1e-3
    batch_size: int = 256
    stream: bool = False  # LayerNorm without affine + LeakyReLU, the stream learner's architecture
    calibration: str = "percentile"
    eval_episodes: int = 20
    threads: int = 1  # small networks run fastest on one thread; more oversubscribe parallel runs
    env_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if self.quant not in QUANT_MODES:
            raise BadInput(f"--quant must be one of {', '.join(QUANT_MODES)}, got {self.quant!r}")
        if self.quant != "none" and self.stream:
            raise BadInput("stream-friendly students (LayerNorm + LeakyReLU) stay fp32; drop --stream or --quant")
        if self.quant == "1bit" and len(self.hidden) < 2:
            raise BadInput("a 1-bit student needs at least two hidden layers (first and last stay int8)")
        if not (self.tau > 0 and self.q_weight >= 0 and self.kl_weight >= 0 and self.kl_weight + self.q_weight > 0):
            raise BadInput("distillation needs tau > 0 and non-negative loss weights, not both zero")
        if self.steps < self.rounds or self.rounds < 1 or min(self.hidden, default=0) < 1 or self.fp32_rounds < 0:
            raise BadInput("distillation needs rounds >= 1, steps >= rounds, fp32_rounds >= 0, positive hidden widths")


class Student(nn.Module):
    """MLP student that can train through its deploy precision (fake quantization).

    `plan` gives each linear layer "fp32", "int8" or "1bit" (`quantize.convert.default_plan`).
    With `fake_quant` on, int8 layers see per-channel fake-quantized weights and inputs
    fake-quantized with the calibrated (scale, zero point) the deployed layer will use, and 1-bit
    layers run their QuEST form; off, everything is fp32 (the warm start).
    """

    def __init__(self, obs_dim: int, n_actions: int, cfg: DistillConfig) -> None:
        super().__init__()
        sizes = [obs_dim, *cfg.hidden, n_actions]
        self.plan = default_plan(len(sizes) - 1, cfg.quant) if cfg.quant != "none" else ["fp32"] * (len(sizes) - 1)
        self.linears = nn.ModuleList(
            BinaryLinear(a, b, seed=cfg.seed + i) if self.plan[i] == "1bit" else nn.Linear(a, b)
            for i, (a, b) in enumerate(pairwise(sizes))
        )
        self.stream = cfg.stream
        self.fake_quant = False
        self.input_qparams: dict[int, tuple[float, int]] = {}  # int8 layer index -> its input (scale, zp)

    def forward(self, x: torch.Tensor, stop_at: int | None = None) -> torch.Tensor:
        """Q-values; with `stop_at=i`, the (pre-quantization) input of linear layer i instead."""
        for i, layer in enumerate(self.linears):
            if i == stop_at:
                return x
            if not self.fake_quant or self.plan[i] == "fp32":
                x = F.linear(x, layer.weight, layer.bias)
            elif self.plan[i] == "1bit":
                x = layer(x)
            else:
                head = i == len(self.linears) - 1 and layer.weight.shape[0] > 1  # stored split, as converted
                w = fake_quant_split_head(layer.weight) if head else fake_quant_weight(layer.weight)
                x = F.linear(fake_quant_activation(x, *self.input_qparams[i]), w, layer.bias)
            if i < len(self.linears) - 1:
                x = F.leaky_relu(F.layer_norm(x, x.shape[-1:]), 0.01) if self.stream else F.relu(x)
        return x

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, method: str) -> None:
        """Set every int8 layer's input range from `x`, front to back, as the deploy converter does."""
        self.fake_quant = True
        for i, precision in enumerate(self.plan):
            if precision == "int8":
                self.input_qparams[i] = activation_qparams(self(x, stop_at=i).numpy(), method)

    @torch.no_grad()
    def load_dense(self, policy: Policy) -> None:
        """Take the weights of `policy`'s dense layers (same architecture), e.g. after equalisation."""
        dense = [layer for layer in policy.layers if isinstance(layer, Dense)]
        for linear, d in zip(self.linears, dense, strict=True):
            linear.weight.copy_(torch.from_numpy(d.weight))
            linear.bias.copy_(torch.from_numpy(d.bias))

    def to_policy(self, observation: ObservationSpec, action: ActionSpec, metadata: dict[str, Any]) -> Policy:
        """The fp32 (shadow-weight) IR; quantization happens on it afterwards."""
        layers: list = []
        for i, layer in enumerate(self.linears):
            layers.append(Dense(layer.weight.detach().numpy().copy(), layer.bias.detach().numpy().copy()))
            if i < len(self.linears) - 1:
                layers += [LayerNorm(), Activation("leaky_relu", 0.01)] if self.stream else [Activation("relu")]
        return Policy(observation, action, layers, metadata)


def _loss(q_s: torch.Tensor, q_t: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    p_t = F.softmax(q_t / cfg.tau, dim=1)
    kl = (p_t * (F.log_softmax(q_t / cfg.tau, dim=1) - F.log_softmax(q_s / cfg.tau, dim=1))).sum(1).mean()
    return cfg.kl_weight * kl + cfg.q_weight * F.smooth_l1_loss(q_s, q_t)


def distill(
    teacher: Policy,
    env_id: str,
    cfg: DistillConfig,
    out: str | Path,
    teacher_dir: str | None = None,
    progress: bool = True,
) -> tuple[Policy, dict[str, Any]]:
    """Distill `teacher` into a student as configured; writes the student IR and distill.json to `out`."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    kw = cfg.env_kwargs
    states = collect_states(teacher.act, env_id, cfg.teacher_states, cfg.seed, cfg.teacher_epsilon, kw)
    validation = collect_states(teacher.act, env_id, cfg.validation_states, cfg.seed + 7_919, 0.0, kw)
    labels = teacher.q_values(states)
    flat = states.reshape(len(states), -1).astype(np.float64)
    spec = teacher.observation
    mean, var = flat.mean(0).reshape(spec.shape), np.maximum(flat.var(0), 1e-8).reshape(spec.shape)
    observation = ObservationSpec(spec.shape, spec.low, spec.high, mean, var, names=spec.names)

    def normalize(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(observation.normalize(np.reshape(x, (len(x), -1))))

    student = Student(observation.size, teacher.action.n, cfg)
    opt = torch.optim.Adam(student.parameters(), lr=cfg.lr)
    per_round = cfg.steps // cfg.rounds
    # decaying the step size settles the near-tie decisions that a constant one keeps flipping
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=per_round * cfg.rounds, eta_min=cfg.lr / 20)
    rng = np.random.default_rng(cfg.seed)

    @torch.no_grad()
    def student_act(x: np.ndarray) -> np.ndarray:
        return student(normalize(x)).argmax(1).numpy()

    teacher_actions = teacher.act(validation)
    rounds: list[dict[str, Any]] = []
    best: tuple[tuple[float, float], dict, dict] | None = None  # (agreement, return), weights, qparams
    bar = tqdm(total=per_round * cfg.rounds, unit="step", disable=not progress, dynamic_ncols=True, mininterval=0.5)
    calib = states[rng.choice(len(states), min(len(states), 5_000), replace=False)]
    calib_x = normalize(calib)
    first_qat = min(cfg.fp32_rounds, cfg.rounds - 1)
    for r in range(cfg.rounds):
        x_all, y_all = normalize(states), torch.from_numpy(labels)
        qat = cfg.quant != "none" and r >= first_qat  # fp32 warm start, then train as deployed
        if qat and r == first_qat:  # entering QAT: equal channel ranges use the int8 grid best
            student.load_dense(equalize_ranges(student.to_policy(observation, teacher.action, {}), calib, student.plan))
            opt.state.clear()  # Adam's moments describe the unscaled weights
        for step in range(per_round):
            if qat and step % 500 == 0:  # ranges follow the weights as they move
                student.calibrate(calib_x, cfg.calibration)
            idx = torch.from_numpy(rng.integers(0, len(states), cfg.batch_size))
            loss = _loss(student(x_all[idx]), y_all[idx], cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            bar.update(1)
        agreement = float((student_act(validation) == teacher_actions).mean())
        ret = evaluate(student_act, env_id, cfg.eval_episodes, cfg.seed + 100_000, kw).mean_return
        rounds.append(
            {"round": r, "states": len(states), "agreement": agreement, "return": ret, "loss": float(loss.detach())}
        )
        bar.set_description(f"round {r}: agree {agreement:.3f} return {ret:.1f}", refresh=False)
        deployable = cfg.quant == "none" or qat
        if deployable and (
            best is None or (agreement, ret) > best[0]
        ):  # keep the best round, as DQN keeps its best eval
            state = {k: v.clone() for k, v in student.state_dict().items()}
            best = ((agreement, ret), state, dict(student.input_qparams))
        if r < cfg.rounds - 1:  # DAgger: the student drives, the teacher labels
            new = collect_states(
                student_act, env_id, cfg.dagger_states, cfg.seed + 1_000 * (r + 1), cfg.student_epsilon, kw
            )
            states, labels = np.concatenate([states, new]), np.concatenate([labels, teacher.q_values(new)])
    bar.close()
    assert best is not None
    student.load_state_dict(best[1])
    student.input_qparams = best[2]

    meta = {"env_id": env_id, "env_kwargs": kw, "seed": cfg.seed, "trainer": "distill", "teacher_dir": teacher_dir}
    if "gamma" in teacher.metadata:  # the student's Q-values are the teacher's
        meta["gamma"] = teacher.metadata["gamma"]
    policy = student.to_policy(observation, teacher.action, meta)
    if cfg.quant != "none":  # deploy with exactly the activation ranges the kept round trained with
        policy = quantize_policy(policy, calib, student.plan, cfg.calibration, cfg.seed, student.input_qparams)
    final = {
        "agreement": float((policy.act(validation) == teacher_actions).mean()),
        "return": evaluate(policy.act, env_id, cfg.eval_episodes, cfg.seed + 100_000, kw).mean_return,
        "teacher_return": evaluate(teacher.act, env_id, cfg.eval_episodes, cfg.seed + 100_000, kw).mean_return,
        "params": policy.n_params,
        "teacher_params": teacher.n_params,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    out = Path(out)
    policy.save(out)
    kept = next(r["round"] for r in rounds if (r["agreement"], r["return"]) == best[0])
    report = {
        "config": {**asdict(cfg), "hidden": list(cfg.hidden)},
        "env_id": env_id,
        "rounds": rounds,
        "kept_round": kept,
        "final": final,
    }
    write_atomic(out / "distill.json", json.dumps(report, indent=1) + "\n")
    return policy, report
