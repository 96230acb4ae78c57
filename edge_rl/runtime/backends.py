"""The backends. Each takes the model bytes a bundle verified, never a path it re-reads.

Two kinds of failure are kept apart, because a device acts differently on them: the runtime is
not installed or broken here (`BackendUnavailable`: use another backend), or the runtime is fine
and the model bytes are not (`ModelError`: the bundle is damaged, whatever else could run it).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from edge_rl.errors import BadInput, ModelError
from edge_rl.policy import ActionSpec, ObservationSpec, Policy
from edge_rl.runtime.native_stderr import dropping
from edge_rl.runtime.onnx_check import check_self_contained

XNNPACK_NOTICE = b"Created TensorFlow Lite XNNPACK delegate"


class BackendUnavailable(RuntimeError):
    """The runtime is not installed here, installed but broken (e.g. an ABI mismatch), or cannot run this
    model though the file is sound (XNNPACK's limits, which LiteRT's builtin kernels do not have)."""


class Backend(ABC):
    """Q-values and greedy actions for raw observations, whatever executes the network.

    A backend holds native resources (a session, an interpreter): `close()` releases them, and
    a backend is a context manager, so a daemon swapping bundles never leaks the old one.
    """

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

    @abstractmethod
    def close(self) -> None:
        """Release the runtime's resources; calling the backend afterwards raises BadInput. Idempotent."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class NumpyBackend(Backend):
    """The IR's own forward pass: the reference every other backend is verified against."""

    name = "numpy"

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy.observation, policy.action)
        self.policy = policy

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.policy is None:
            raise _closed(self.name)
        return self.policy.forward(x)

    def close(self) -> None:
        self.policy = None


def _closed(name: str) -> BadInput:
    return BadInput(f"the {name} backend is closed")


def onnx_runtime() -> Any:
    """The onnxruntime module, or BackendUnavailable.

    ONNX Runtime's native init writes a device id and a telemetry queue under ~/.cache and later
    uploads it, unless ORT_DISABLE_TELEMETRY is set before the first import (measured with strace;
    `disable_telemetry_events()` stops neither). A device process writes nothing outside its
    bundle and state directory, so it is set here, where every import of onnxruntime happens.
    """
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendUnavailable(f"onnxruntime is not installed ({e})") from None
    return onnxruntime


class OnnxBackend(Backend):
    """ONNX Runtime on the CPU, one thread, all graph optimisations."""

    name = "onnxruntime"

    def __init__(self, model: bytes, observation: ObservationSpec, action: ActionSpec) -> None:
        super().__init__(observation, action)
        ort = onnx_runtime()
        check_self_contained(model)  # before ONNX Runtime parses anything: no file outside the bytes is read
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception classes (InvalidProtobuf, Fail, ...)
            raise ModelError(f"ONNX Runtime cannot load the model: {str(e).splitlines()[0]}") from None
        self._shape = (-1, *observation.shape)

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            raise _closed(self.name)
        return self.session.run(["q_values"], {"obs": x.reshape(self._shape)})[0]

    def _act_one(self, x: np.ndarray) -> int:
        if self.session is None:
            raise _closed(self.name)
        return int(self.session.run(["action"], {"obs": x.reshape(self._shape)})[0][0])

    def close(self) -> None:
        self.session = None


def _tflite_interpreter() -> tuple[type, Any]:
    """LiteRT's Interpreter and its op-resolver enum; tflite-runtime only where it can work (not under numpy 2)."""
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        return Interpreter, OpResolverType
    except ImportError:
        pass
    if int(np.__version__.split(".")[0]) >= 2:
        raise BackendUnavailable("no LiteRT (pip install ai-edge-litert); tflite-runtime needs numpy < 2")
    try:
        from tflite_runtime.interpreter import Interpreter, OpResolverType
    except ImportError:
        raise BackendUnavailable("no TFLite runtime: pip install ai-edge-litert") from None
    return Interpreter, OpResolverType


class LiteRTBackend(Backend):
    """LiteRT (ai-edge-litert) interpreter, one thread; the model takes one observation per invoke.

    Two kernel sets run the same file: the default XNNPACK delegate (`litert`, fastest) and the
    interpreter's builtin kernels (`litert-builtin`), the reference implementation whose integer
    arithmetic TFLite Micro and CMSIS-NN share. They round differently (XNNPACK requantizes int8
    in float, its SQRT is not correctly rounded), so `verify` measures both and a device runs
    only one that reproduced the IR.
    """

    name = "litert"

    def __init__(
        self, model: bytes, observation: ObservationSpec, action: ActionSpec, builtin_kernels: bool = False
    ) -> None:
        super().__init__(observation, action)
        interpreter_class, resolvers = _tflite_interpreter()
        self.builtin_kernels = builtin_kernels
        self.name = "litert-builtin" if builtin_kernels else "litert"  # type: ignore[misc]
        kwargs = {}
        if builtin_kernels:
            kwargs["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        if model[4:8] != b"TFL3":
            raise ModelError("not a TFLite flatbuffer (no TFL3 identifier)")
        try:
            with dropping(XNNPACK_NOTICE):  # printed by the first XNNPACK interpreter's allocate_tensors
                self.interpreter = interpreter_class(model_content=model, num_threads=1, **kwargs)
                self.interpreter.allocate_tensors()
            self._input = self.interpreter.get_input_details()[0]["index"]
            outputs = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
            self._output, self._action = outputs["q_values"], outputs.get("action")
        except AttributeError as e:  # how a broken install (e.g. an ABI mismatch) shows up
            raise BackendUnavailable(f"the TFLite interpreter does not work here: {e}") from None
        except (RuntimeError, ValueError, IndexError, KeyError) as e:
            line = str(e).splitlines()[0] if str(e) else repr(e)
            if not builtin_kernels and "XNNPack" in line:  # the delegate's limits (e.g. requantization < 256)
                raise BackendUnavailable(f"XNNPACK cannot run this model: {line}") from None
            raise ModelError(f"LiteRT cannot load the model: {line}") from None
        self._shape = (1, *observation.shape)

    def _act_one(self, x: np.ndarray) -> int:
        if self.interpreter is None:
            raise _closed(self.name)
        if self._action is None:
            return super()._act_one(x)
        self.interpreter.set_tensor(self._input, x.reshape(self._shape))
        self.interpreter.invoke()
        return int(self.interpreter.get_tensor(self._action)[0])

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self.interpreter is None:
            raise _closed(self.name)
        out = np.empty((x.shape[0], self.action.n), np.float32)
        for i, row in enumerate(x):
            self.interpreter.set_tensor(self._input, row.reshape(self._shape))
            self.interpreter.invoke()
            out[i] = self.interpreter.get_tensor(self._output)[0]
        return out

    def close(self) -> None:
        self.interpreter = None


BACKENDS = ("numpy", "onnxruntime", "litert", "litert-builtin")  # every way a bundle can run, as verify names them


def available_backends() -> list[str]:
    """Names of the backends whose runtime imports here (numpy always)."""
    names = ["numpy"]
    try:
        onnx_runtime()
        names.append("onnxruntime")
    except BackendUnavailable:
        pass
    try:
        _tflite_interpreter()
        names += ["litert", "litert-builtin"]
    except BackendUnavailable:
        pass
    return names
