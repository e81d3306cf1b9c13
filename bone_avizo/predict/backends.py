"""Compute backends: a callable mapping tiles (B, C, h, w) float32 -> logits (B, K, h, w).

torch: CPU or CUDA, eval mode, inference mode, channels_last; fp16/bf16 weights (autocast where the device
lacks the kernels); optional torch.compile.
onnxruntime: CPU, CUDA or TensorRT execution providers, from an exported model.
"""
from __future__ import annotations

import copy
import itertools
import logging
import os

import torch

from bone_avizo._memory import BufferPool, leased
from bone_avizo.errors import ConfigError, ModelError
from bone_avizo.models.onnx_cache import cache_folder, cached_onnx, weights_digest  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
REDUCED_PRECISIONS = tuple(_DTYPES)  # run by the torch backend only


def check_precision(backend: str, precision: str) -> None:
    """ConfigError where ``backend`` cannot run ``precision`` (onnxruntime runs fp32 only)."""
    if precision in REDUCED_PRECISIONS and backend != "torch":
        raise ConfigError(f"precision {precision} is available with --backend torch; {backend} runs fp32: "
                          "drop --precision or use --backend torch")


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' -> fp32 on CPU (exact), fp16 on CUDA."""
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


class TorchBackend:
    """Runs a torch module on tiles (B, C, h, w); returns float32 logits (B, K, h, w) on the device.

    fp16/bf16 run a copy of the network whose weights and activations are in that precision (faster
    than per-op autocast); where the device cannot run it, autocast is used instead (logged).
    ``compile`` wraps the network in torch.compile on first use; a failure falls back to eager (logged).
    """

    def __init__(self, module: torch.nn.Module, *, device: torch.device, precision: str, compile: bool = False):
        self.device = device
        self.precision = resolve_precision(precision, device)
        # a copy: the caller's network keeps its device, mode, weights and layout (channels_last weights
        # made its own later forward passes 10x slower on CPU)
        self.module = copy.deepcopy(module).eval().to(device).to(memory_format=torch.channels_last)
        self.dtype = _DTYPES.get(self.precision, torch.float32)
        self._fp32_module = self.module
        if self.dtype != torch.float32:  # another copy: the fp32 one stays for the autocast fallback
            self.module = copy.deepcopy(self.module).to(self.dtype)
        self.autocast = False
        self.fixed_batch = bool(compile)  # a compiled network is specialised to one batch shape
        self._forward = self._compiled(self.module) if compile else self.module
        self._checked = False

    @staticmethod
    def _compiled(module):
        try:
            return torch.compile(module, dynamic=False)
        except Exception as exc:  # noqa: BLE001 - any failure to set up compile falls back to eager
            log.warning("torch.compile is not available here (%s); running the network uncompiled", exc)
            return module

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        tiles = tiles.to(self.device, non_blocking=True)
        tiles = tiles.to(torch.float32 if self.autocast else self.dtype).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            out = self._first_call(tiles) if not self._checked else self._run(tiles)
        return out.float().contiguous()  # channels_last outputs make the tile merge strided and slow

    def _run(self, tiles: torch.Tensor) -> torch.Tensor:
        if self.autocast:
            with torch.autocast(self.device.type, dtype=self.dtype):
                return self._forward(tiles)
        return self._forward(tiles)

    def _first_call(self, tiles: torch.Tensor) -> torch.Tensor:
        """The first forward pass, with the fallbacks: compiled -> eager, reduced weights -> autocast."""
        try:
            out = self._run(tiles)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - compile and low-precision kernels fail in many ways
            if self._forward is not self.module:
                log.warning("torch.compile failed (%s: %s); running the network uncompiled",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
                self._forward, self.fixed_batch = self.module, False
            elif self.dtype != torch.float32 and not self.autocast:
                log.warning("%s weights do not run on %s (%s); using %s autocast instead", self.precision,
                            self.device, str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                            self.precision)
                self.module = self._forward = self._fp32_module
                self.autocast = True
                tiles = tiles.float()
            else:
                raise
            return self._first_call(tiles)
        self._checked = True
        return out


class OnnxBackend:
    """Runs an ONNX model with onnxruntime (CUDA/TensorRT providers when the device is CUDA).

    On CPU, after a first run of each input shape (which tells the output's shape), the network writes
    its output straight into a pooled array (I/O binding) that returns to the pool once the caller's
    last view of it is gone: no copy of the output and no fresh pages (with the fixed mmap threshold
    each new output is mapped and faulted in: a fifth of a near-free network's time)."""

    def __init__(self, onnx_path: str | os.PathLike, *, device: torch.device, threads: int = 0):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError('the onnxruntime backend needs onnxruntime: pip install "bone-avizo[onnx]" '
                              '(or [gpu] for CUDA)') from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
        self.device = device
        providers = self._providers(ort, device)
        try:
            self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelError(f"onnxruntime cannot load {onnx_path}: {exc}") from None
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        self._outputs_of: dict[tuple, tuple] = {}  # input shape -> (output shape, dtype), from a first run
        self._outputs = BufferPool()
        log.info("onnxruntime providers: %s", self.session.get_providers())

    @staticmethod
    def _providers(ort, device: torch.device) -> list:
        available = ort.get_available_providers()
        if device.type != "cuda":
            return ["CPUExecutionProvider"]
        wanted = [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
        if "CUDAExecutionProvider" not in available:
            raise ConfigError("onnxruntime has no CUDA provider here; pip install onnxruntime-gpu or use "
                              "--device cpu")
        return wanted

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        array = tiles.detach().to("cpu", torch.float32).contiguous().numpy()
        known = self._outputs_of.get(array.shape)
        if known is None or self.device.type != "cpu":
            out = self.session.run(None, {self.input_name: array})[0]
            self._outputs_of[array.shape] = (out.shape, out.dtype)
            return torch.from_numpy(out).to(self.device)
        shape, dtype = known
        out = leased(self._outputs, shape, dtype)
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, array)
        binding.bind_output(self.output_name, "cpu", 0, dtype, shape, out.ctypes.data)
        self.session.run_with_iobinding(binding)
        return torch.from_numpy(out)


def build_backend(module: torch.nn.Module, *, backend: str, device: torch.device, precision: str,
                  threads: int, onnx_path: str | os.PathLike | None = None, in_channels: int = 1,
                  compile: bool = False):
    """The backend named ``backend`` for ``module`` (onnxruntime uses a cached ONNX export); ``module``
    itself is left as it is (device, train/eval mode, memory format)."""
    if backend == "torch":
        return TorchBackend(module, device=device, precision=precision, compile=compile)
    check_precision(backend, precision)
    if onnx_path is None and not _on_cpu(module):  # exported from a CPU copy; the caller's stays where it is
        module = copy.deepcopy(module).to("cpu")
    return OnnxBackend(onnx_path or cached_onnx(module, in_channels), device=device, threads=threads)


def _on_cpu(module: torch.nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in itertools.chain(module.parameters(), module.buffers()))
