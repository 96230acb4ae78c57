"""The three backends. Each takes the model bytes a bundle verified, never a path it re-reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np

from edge_rl.policy import ActionSpec, ObservationSpec, Policy


class BackendUnavailable(RuntimeError):
    """The runtime is not installed here, or installed but broken (e.g. an ABI mismatch)."""


class Backend(ABC):
    """Q-values and greedy actions for raw observations, whatever executes the network."""

    name: ClassVar[str]

    def __init__(self, observation: ObservationSpec, action: ActionSpec) -> None:
        self.observation, self.action = observation, action

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """(n,) float32 for one observation, (batch, n) for a batch; bad observations raise ObservationError."""
        x, single = self.observation.batch(obs)
        q = self._run(x)
        return q[0] if single else q

    def act(self, obs: np.ndarray) -> int | np.ndarray:
        """Greedy action (first maximum): an int for one observation, int64 (batch,) for a batch."""
        x, single = self.observation.batch(obs)
        return self._act_one(x) if single else self._run(x).argmax(axis=1)

    def _act_one(self, x: np.ndarray) -> int:
        """The control loop's call: one checked observation (1, size) -> action."""
        return int(self._run(x)[0].argmax())

    @abstractmethod
    def _run(self, x: np.ndarray) -> np.ndarray:
        """Q-values of checked raw observations, float32 (batch, size) -> (batch, n)."""


class NumpyBackend(Backend):
    """The IR's own forward pass: the reference every other backend is verified against."""

    name = "numpy"

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy.observation, policy.action)
        self.policy = policy

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.policy.forward(x)


class OnnxBackend(Backend):
    """ONNX Runtime on the CPU, one thread, all graph optimisations."""

    name = "onnxruntime"

    def __init__(self, model: bytes, observation: ObservationSpec, action: ActionSpec) -> None:
        super().__init__(observation, action)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable(f"onnxruntime is not installed ({e})") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self._shape = (-1, *observation.shape)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(["q_values"], {"obs": x.reshape(self._shape)})[0]

    def _act_one(self, x: np.ndarray) -> int:
        return int(self.session.run(["action"], {"obs": x.reshape(self._shape)})[0][0])


def _tflite_interpreter() -> type:
    """LiteRT's Interpreter; tflite-runtime only where it can work (it breaks under numpy 2)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    if int(np.__version__.split(".")[0]) >= 2:
        raise BackendUnavailable("no LiteRT (pip install ai-edge-litert); tflite-runtime needs numpy < 2")
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter
    except ImportError:
        raise BackendUnavailable("no TFLite runtime: pip install ai-edge-litert") from None


class LiteRTBackend(Backend):
    """LiteRT (ai-edge-litert) interpreter, one thread; the model takes one observation per invoke.

    `builtin_kernels=True` turns the default XNNPACK delegate off: its SQRT is not correctly
    rounded (an ulp off, measured), which moves a 1-bit layer's input scale and, at a rounding
    tie, an int8 code; LiteRT's builtin kernels compute the IR's float32 operations exactly.
    """

    name = "litert"

    def __init__(
        self, model: bytes, observation: ObservationSpec, action: ActionSpec, builtin_kernels: bool = False
    ) -> None:
        super().__init__(observation, action)
        interpreter_class = _tflite_interpreter()
        kwargs = {}
        if builtin_kernels:
            from ai_edge_litert.interpreter import OpResolverType

            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:  # constructing is where a broken install (e.g. an ABI error) shows up
            self.interpreter = interpreter_class(model_content=model, num_threads=1, **kwargs)
            self.interpreter.allocate_tensors()
        except (AttributeError, RuntimeError, ValueError) as e:
            raise BackendUnavailable(f"the TFLite interpreter cannot run this model: {e}") from None
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self._output, self._action = outputs["q_values"], outputs.get("action")
        self._shape = (1, *observation.shape)

    def _act_one(self, x: np.ndarray) -> int:
        if self._action is None:
            return super()._act_one(x)
        self.interpreter.set_tensor(self._input, x.reshape(self._shape))
        self.interpreter.invoke()
        return int(self.interpreter.get_tensor(self._action)[0])

    def _run(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.action.n), np.float32)
        for i, row in enumerate(x):
            self.interpreter.set_tensor(self._input, row.reshape(self._shape))
            self.interpreter.invoke()
            out[i] = self.interpreter.get_tensor(self._output)[0]
        return out


BACKENDS: dict[str, type[Backend]] = {b.name: b for b in (NumpyBackend, OnnxBackend, LiteRTBackend)}


def available_backends() -> list[str]:
    """Names of the backends whose runtime imports here (numpy always)."""
    names = ["numpy"]
    try:
        import onnxruntime  # noqa: F401

        names.append("onnxruntime")
    except ImportError:
        pass
    try:
        _tflite_interpreter()
        names.append("litert")
    except BackendUnavailable:
        pass
    return names
