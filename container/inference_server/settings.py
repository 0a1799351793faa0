"""Process settings: read once at start-up from the environment (and CLI flags), validated in one place.

Every limit the server enforces derives from the inference mode, so the request-size limit, the
timeouts and the batch parameters cannot disagree with each other or with the platform's own.
An invalid value stops the process with one line naming the variable and its allowed values.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from inference_server.allocator import HeapPolicy
from inference_server.logs import LogFormat

T = TypeVar("T")
D = TypeVar("D")  # a default, which may be of another type than what is parsed (None)
MIB = 1024 * 1024
DEFAULT_PORT = 8080
DEFAULT_HOST = "0.0.0.0"
DEFAULT_MODEL_DIR = Path("/opt/ml/model")
# Outside /opt/ml/model, which SageMaker may mount read-only; /tmp is writable in every mode.
DEFAULT_CPU_RUNTIME_CACHE_DIR = Path("/tmp/inference-server-openvino")
# 8192 x 8192: every common camera up to 64 MP. The model resizes to ~800 px anyway; what a large
# image costs in memory is bounded separately, by the memory budget (MEMORY_LIMIT_MB, memory.py).
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
# SageMaker's batch default for MaxPayloadInMB, and its hard maximum.
DEFAULT_BATCH_PAYLOAD_MB = 6
MAX_BATCH_PAYLOAD_MB = 100
# The longest invocation SageMaker allows in async (InvocationTimeoutSeconds) and batch
# (InvocationsTimeoutInSeconds) modes.
MAX_TIMEOUT_S = 3600


class InferenceMode(enum.StrEnum):
    REALTIME = "realtime"
    ASYNC = "async"
    SERVERLESS = "serverless"
    BATCH = "batch"


class BatchRecordErrors(enum.StrEnum):
    OBJECT = "object"  # answer a bad record with 200 and {"error": {...}} so its file still completes
    FAIL = "fail"  # answer with the 4xx status: SageMaker then fails the whole transform job


@dataclass(frozen=True)
class ModeLimits:
    max_request_bytes: int
    request_timeout_s: int
    # How long a request's headers, and then its body, may take to arrive (READ_TIMEOUT_S). SageMaker's
    # front end forwards a request only once it has all of it, so a request that trickles in is a
    # client on the container's own network misbehaving (or an attack), never a slow caller.
    read_timeout_s: int = 60


# The platform's own limits per mode. Real-time and serverless callers give up after 60 s, so a
# request still queued by then is dropped instead of computed for nobody. Async and batch get the
# longest invocation the platform allows so the container never cuts a request the platform allows.
MODE_LIMITS: dict[InferenceMode, ModeLimits] = {
    InferenceMode.REALTIME: ModeLimits(max_request_bytes=6 * MIB, request_timeout_s=60),
    InferenceMode.SERVERLESS: ModeLimits(max_request_bytes=4 * MIB, request_timeout_s=60),
    # Up to 1 GiB from S3 through the platform's agent: 600 s is 1.7 MiB/s at worst.
    InferenceMode.ASYNC: ModeLimits(
        max_request_bytes=1024 * MIB, request_timeout_s=MAX_TIMEOUT_S, read_timeout_s=600
    ),
    # max_request_bytes comes from SAGEMAKER_MAX_PAYLOAD_IN_MB in batch mode.
    InferenceMode.BATCH: ModeLimits(
        max_request_bytes=DEFAULT_BATCH_PAYLOAD_MB * MIB, request_timeout_s=MAX_TIMEOUT_S, read_timeout_s=600
    ),
}
LOG_LEVELS = ("debug", "info", "warning", "error")
# Real-time and serverless callers wait at most 60 s; this many admitted requests waiting for a copy
# bounds the decoded images held in memory (the wait budget usually refuses long before).
DEFAULT_MAX_QUEUE_DEPTH = 64
# UNHEALTHY_AFTER_ERRORS: a model copy whose inferences fail (anything but a request's own error)
# this many times in a row is taken out of service; with none left, /ping fails and SageMaker
# replaces the instance. A sticky CUDA error fails every inference after the first; 5 leaves room
# for a few bad requests in a row that only a custom predict_fn rejects. 0: never.
DEFAULT_UNHEALTHY_AFTER_ERRORS = 5
MAX_MODEL_COPIES = 64
# 16 TiB: beyond any instance SageMaker offers; a larger value is a typo (say, bytes for MiB).
MAX_MEMORY_LIMIT_MB = 16 * 1024 * 1024


class MixedPrecision(enum.StrEnum):
    OFF = "off"
    FP16 = "fp16"  # torch.autocast(dtype=float16) on CUDA
    BF16 = "bf16"  # torch.autocast(dtype=bfloat16) on CUDA (Ampere and newer)


class CpuRuntime(enum.StrEnum):
    EAGER = "eager"  # the backend's torch modules
    OPENVINO = "openvino"  # the networks in OpenVINO, the rest in torch (cpu_runtime.py)


class CpuPrecision(enum.StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"  # OpenVINO's bfloat16 kernels (AVX512_BF16 / AMX); refused where the CPU lacks them


class SettingsError(ValueError):
    """One or more invalid settings; the message is one line naming each variable."""


@dataclass(frozen=True, kw_only=True)
class Settings:
    mode: InferenceMode = InferenceMode.REALTIME
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    model_dir: Path = DEFAULT_MODEL_DIR
    max_request_bytes: int = MODE_LIMITS[InferenceMode.REALTIME].max_request_bytes
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    request_timeout_s: int = MODE_LIMITS[InferenceMode.REALTIME].request_timeout_s
    batch_payload_mb: int = DEFAULT_BATCH_PAYLOAD_MB
    batch_record_errors: BatchRecordErrors = BatchRecordErrors.OBJECT
    log_level: str = "info"
    # LOG_FORMAT: `json` (the default) writes one JSON object per line, each traceback in one field, as
    # CloudWatch wants it; `text` writes plain lines for reading in a terminal (local serving).
    log_format: LogFormat = LogFormat.JSON
    # READ_TIMEOUT_S: seconds a request's headers may take from its first byte, and its body from its
    # headers, before it is answered 408 and closed (default by mode: 60 s, async and batch 600 s).
    read_timeout_s: int = MODE_LIMITS[InferenceMode.REALTIME].read_timeout_s
    model_copies: int | None = None  # None: one per visible GPU, one on CPU
    mixed_precision: MixedPrecision = MixedPrecision.OFF
    # CPU_RUNTIME / CPU_PRECISION: what runs the model's networks on a CPU copy (GPU copies ignore
    # them); CPU_RUNTIME_CACHE_DIR: where a conversion made at start is kept for the next start.
    cpu_runtime: CpuRuntime = CpuRuntime.EAGER
    cpu_precision: CpuPrecision = CpuPrecision.FP32
    cpu_runtime_cache_dir: Path = DEFAULT_CPU_RUNTIME_CACHE_DIR
    max_queue_depth: int = DEFAULT_MAX_QUEUE_DEPTH
    heap_policy: HeapPolicy = HeapPolicy.RETAIN
    unhealthy_after_errors: int = DEFAULT_UNHEALTHY_AFTER_ERRORS  # 0: never
    # MEMORY_LIMIT_MB: the memory (MiB) the container has, which admission holds requests to (see
    # memory.py): an image whose estimate exceeds what one request may use is refused 413
    # insufficient_memory, and requests beyond what fits at once 503 overloaded. Unset: the cgroup
    # limit (v2 memory.max, v1 memory.limit_in_bytes) where one is set, else physical memory.
    memory_limit_mb: int | None = None

    @property
    def refuses_late_requests(self) -> bool:
        """Real-time and serverless answer overload at once; async and batch keep their long queues."""
        return self.mode in (InferenceMode.REALTIME, InferenceMode.SERVERLESS)

    @property
    def record_errors_as_objects(self) -> bool:
        return self.mode is InferenceMode.BATCH and self.batch_record_errors is BatchRecordErrors.OBJECT

    def execution_parameters(self, model_copies: int) -> dict[str, int | str]:
        """What GET /execution-parameters suggests to batch transform (the job's own values win).

        One transform per model copy keeps every copy busy; more would only queue and eat into
        their invocation timeout. An image is one record, never split or concatenated.
        """
        return {
            "MaxConcurrentTransforms": model_copies,
            "BatchStrategy": "SINGLE_RECORD",
            "MaxPayloadInMB": self.batch_payload_mb,
        }

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        host: str | None = None,
        port: int | None = None,
        model_dir: Path | str | None = None,
    ) -> Settings:
        """Settings from environment variables; CLI flags (keyword arguments) take precedence."""
        reader = _EnvReader(environ)
        mode = reader.choice("INFERENCE_MODE", InferenceMode, InferenceMode.REALTIME)
        # SageMaker sets SAGEMAKER_BATCH=true in every transform job, whatever the Model's own mode.
        if reader.boolean("SAGEMAKER_BATCH", False):
            mode = InferenceMode.BATCH
        limits = MODE_LIMITS[mode]
        batch_payload_mb = reader.integer(
            "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_BATCH_PAYLOAD_MB, minimum=1, maximum=MAX_BATCH_PAYLOAD_MB
        )
        max_request_bytes = (
            batch_payload_mb * MIB if mode is InferenceMode.BATCH else limits.max_request_bytes
        )
        settings = cls(
            mode=mode,
            host=host if host is not None else DEFAULT_HOST,
            port=port
            if port is not None
            else reader.integer("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 1, 65535),
            model_dir=Path(
                model_dir if model_dir is not None else environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR
            ),
            max_request_bytes=max_request_bytes,
            max_image_pixels=reader.integer("MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS, minimum=1),
            request_timeout_s=reader.integer(
                "REQUEST_TIMEOUT_S", limits.request_timeout_s, minimum=1, maximum=MAX_TIMEOUT_S
            ),
            batch_payload_mb=batch_payload_mb,
            batch_record_errors=reader.choice(
                "BATCH_RECORD_ERRORS", BatchRecordErrors, BatchRecordErrors.OBJECT
            ),
            log_level=reader.choice("LOG_LEVEL", LOG_LEVELS, "info"),
            log_format=reader.choice("LOG_FORMAT", LogFormat, LogFormat.JSON),
            read_timeout_s=reader.integer(
                "READ_TIMEOUT_S", limits.read_timeout_s, minimum=1, maximum=MAX_TIMEOUT_S
            ),
            model_copies=reader.integer("MODEL_COPIES", None, minimum=1, maximum=MAX_MODEL_COPIES),
            mixed_precision=reader.choice("MIXED_PRECISION", MixedPrecision, MixedPrecision.OFF),
            cpu_runtime=reader.choice("CPU_RUNTIME", CpuRuntime, CpuRuntime.EAGER),
            cpu_precision=reader.choice("CPU_PRECISION", CpuPrecision, CpuPrecision.FP32),
            cpu_runtime_cache_dir=Path(
                environ.get("CPU_RUNTIME_CACHE_DIR", "").strip() or DEFAULT_CPU_RUNTIME_CACHE_DIR
            ),
            max_queue_depth=reader.integer("MAX_QUEUE_DEPTH", DEFAULT_MAX_QUEUE_DEPTH, minimum=1),
            heap_policy=reader.choice("HEAP_POLICY", HeapPolicy, HeapPolicy.RETAIN),
            unhealthy_after_errors=reader.integer(
                "UNHEALTHY_AFTER_ERRORS", DEFAULT_UNHEALTHY_AFTER_ERRORS, minimum=0
            ),
            memory_limit_mb=reader.integer("MEMORY_LIMIT_MB", None, minimum=1, maximum=MAX_MEMORY_LIMIT_MB),
        )
        if port is not None and not 1 <= port <= 65535:
            reader.errors.append(f"--port={port} is invalid; allowed: 1..65535")
        if reader.errors:
            raise SettingsError("; ".join(reader.errors))
        return settings


class _EnvReader:
    """Parses environment variables, collecting every error so one message can name them all."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.errors: list[str] = []

    def _parse(self, name: str, default: D, parse: Callable[[str], T], allowed: str) -> T | D:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            return parse(raw)
        except ValueError:
            self.errors.append(f"{name}={raw!r} is invalid; allowed: {allowed}")
            return default

    def integer(self, name: str, default: T, minimum: int, maximum: int | None = None) -> int | T:
        def parse(raw: str) -> int:
            value = int(raw)
            if value < minimum or (maximum is not None and value > maximum):
                raise ValueError(raw)
            return value

        allowed = f"an integer in {minimum}..{maximum}" if maximum is not None else f"an integer >= {minimum}"
        return self._parse(name, default, parse, allowed)

    def choice(self, name: str, choices: Iterable[T], default: T) -> T:
        options = tuple(choices)

        def parse(raw: str) -> T:
            for option in options:
                if str(option) == raw.lower():
                    return option
            raise ValueError(raw)

        return self._parse(name, default, parse, " | ".join(str(option) for option in options))

    def boolean(self, name: str, default: bool) -> bool:
        words = {"true": True, "1": True, "false": False, "0": False}

        def parse(raw: str) -> bool:
            if raw.lower() not in words:
                raise ValueError(raw)
            return words[raw.lower()]

        return self._parse(name, default, parse, "true | false")


class _RecordingEnviron(dict[str, str]):
    """An empty environment that notes each name the parser asks for."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def get(self, key: str, default=None):
        if key not in self.names:
            self.names.append(key)
        return super().get(key, default)


def environment_variables() -> tuple[str, ...]:
    """Every environment variable the server reads, in the order `Settings.from_env` reads them: the
    one list the docs' reference page and the tests' clean environment are made from."""
    environ = _RecordingEnviron()
    Settings.from_env(environ)
    return tuple(environ.names)
