"""CPU_RUNTIME=openvino: the model's networks run in OpenVINO on the CPU, everything else in torch.

What moves is only the network: the convolution and fully connected stacks a backend names
(``Predictor.runtime_networks()``: backbone + FPN, RPN head, mask head). The box head, resizing,
anchor generation, box decoding, NMS, ROIAlign, thresholds and the mask paste stay the backend's
own torch code, so answers differ from eager only by arithmetic. The shapes are dynamic (any image size the
resize produces, any number of boxes), so one conversion serves every request.

A conversion is made once, from the artifact's own weights, and reused:

* ``python -m inference_server.package --cpu-runtime openvino`` stores it in the artifact
  (``openvino/``), so a fresh instance only compiles it;
* otherwise the first start converts and writes it to CPU_RUNTIME_CACHE_DIR, keyed by the weights'
  digest, and later starts on the same disk read it from there.

Either way ``openvino/manifest.json`` records the SHA-256 of the weights file it was converted from;
a conversion whose digest is not that of the artifact's weights is refused at load with one line.

openvino is imported only when the option is on: the eager path does not need it installed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inference_server.artifact_format import OPENVINO_DIR, OPENVINO_MANIFEST, WEIGHTS_FILE, ArtifactError
from inference_server.settings import DEFAULT_CPU_RUNTIME_CACHE_DIR, CpuPrecision

logger = logging.getLogger("inference_server")

# Where a conversion lives in the artifact (under each cache key, the same files).
RUNTIME_DIR = OPENVINO_DIR
MANIFEST_FILE = OPENVINO_MANIFEST
MANIFEST_VERSION = 1


# OpenVINO's name for each precision (the CPU plugin's INFERENCE_PRECISION_HINT).
_PRECISION_HINTS = {CpuPrecision.FP32: "f32", CpuPrecision.BF16: "bf16"}


class RuntimeUnavailable(ArtifactError):
    """The option cannot be honoured here (OpenVINO missing, or bf16 on a CPU without it)."""


Run = Callable[..., tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Network:
    """One network a backend hands to the runtime.

    ``module`` takes ``example``'s tensors and returns a tuple of tensors (``Unpatched``); ``shapes``
    gives each input's shape with -1 where it varies. ``install`` receives the compiled network (a
    function from input tensors to the tuple of output tensors) and puts it where the model calls
    the module; inputs with an empty dimension (no boxes) are sent to the module itself.
    """

    name: str
    module: torch.nn.Module
    example: tuple[torch.Tensor, ...]
    shapes: tuple[tuple[int, ...], ...]
    install: Callable[[Run], None]


class Unpatched(torch.nn.Module):
    """``module.<method>`` as its class defines it, with its outputs flattened into a tuple.

    A Network's module must keep computing what the eager module computes after ``install`` has put
    the compiled network on the instance (its fallback for empty inputs calls it), so it calls the
    class's method, never the instance attribute.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        method: str = "forward",
        flatten: Callable[[Any], tuple[torch.Tensor, ...]] = lambda output: (output,),
    ) -> None:
        super().__init__()
        self.inner = module
        self.method = method
        self.flatten = flatten

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.flatten(getattr(type(self.inner), self.method)(self.inner, *inputs))


class _ListInput(torch.nn.Module):
    """A head that takes a list of feature maps, called with one argument per map (as traced)."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, *features: torch.Tensor) -> Any:
        return type(self.head).forward(self.head, list(features))


def replace_method(module: torch.nn.Module, method: str = "forward") -> Callable[[Run], None]:
    """An install for a network of one tensor in, one tensor out, called as ``module.<method>``."""

    def install(run: Run) -> None:
        setattr(module, method, lambda features: run(features)[0])

    return install


def backbone_network(
    backbone: torch.nn.Module,
    names: Sequence[str],
    image: torch.Tensor,
    mapping: Callable[[Iterable[tuple[str, torch.Tensor]]], Mapping[str, torch.Tensor]] = dict,
) -> Network:
    """A backbone (+ FPN), detectron2's or torchvision's: an image batch in, the feature maps by
    name out, built with ``mapping`` (the mapping type the model's own backbone returns). The traced
    network takes any image size."""
    names = list(names)

    def install(run: Run) -> None:
        backbone.forward = lambda tensor: mapping(zip(names, run(tensor), strict=True))

    return Network(
        "backbone",
        Unpatched(backbone, flatten=lambda features: tuple(features[name] for name in names)),
        (image,),
        ((-1, 3, -1, -1),),
        install,
    )


def rpn_head_network(head: torch.nn.Module, features: tuple[torch.Tensor, ...]) -> Network:
    """An RPN head, detectron2's or torchvision's: a list of feature maps in, (objectness per level,
    box deltas per level) out. The traced network takes one input per level."""
    levels = len(features)

    def install(run: Run) -> None:
        def forward(maps: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            outputs = run(*maps)
            return list(outputs[:levels]), list(outputs[levels:])

        head.forward = forward

    return Network(
        "rpn_head",
        Unpatched(_ListInput(head), flatten=lambda output: tuple(output[0]) + tuple(output[1])),
        features,
        tuple((-1, feature.shape[1], -1, -1) for feature in features),
        install,
    )


def weights_digest(model_dir: Path) -> str:
    digest = hashlib.sha256()
    with (Path(model_dir) / WEIGHTS_FILE).open("rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _openvino() -> Any:
    try:
        import openvino
    except ModuleNotFoundError:
        raise RuntimeUnavailable(
            "CPU_RUNTIME=openvino needs the openvino package, which this image lacks: use the cpu image "
            "target or pip install openvino"
        ) from None
    return openvino


def check_precision(precision: CpuPrecision) -> None:
    """Refuse bf16 on a CPU whose OpenVINO plugin has no bfloat16 kernels."""
    if precision is CpuPrecision.FP32:
        return
    capabilities = _openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in capabilities:
        raise RuntimeUnavailable(
            f"CPU_PRECISION=bf16: this CPU has no bfloat16 support (OpenVINO reports "
            f"{', '.join(capabilities)}); use CPU_PRECISION=fp32"
        )


def convert(networks: Sequence[Network], dest: Path, digest: str) -> None:
    """Trace and convert each network into dest (IR .xml/.bin, fp32 weights) with its manifest."""
    ov = _openvino()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for network in networks:
        with torch.inference_mode(False), torch.no_grad():
            # check_trace=False: the check re-runs the module and compares outputs exactly, which
            # detectron2's FPN fails on float noise alone; the conversion is checked by the tests.
            traced = torch.jit.trace(network.module.eval(), network.example, check_trace=False)
            model = ov.convert_model(
                traced,
                example_input=network.example,
                input=[ov.PartialShape(list(shape)) for shape in network.shapes],
            )
        ov.save_model(model, str(dest / f"{network.name}.xml"), compress_to_fp16=False)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "weights_sha256": digest,
        "networks": [network.name for network in networks],
        "openvino": ov.__version__,
        "torch": torch.__version__,
    }
    (dest / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def read_manifest(directory: Path, digest: str, names: Sequence[str]) -> None:
    """Check a stored conversion against the weights it must come from; ArtifactError when it does not."""
    path = Path(directory) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
        converted_from = str(manifest["weights_sha256"])
        networks = list(manifest["networks"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{path} is not an OpenVINO conversion manifest: {error}") from None
    if converted_from != digest:
        raise ArtifactError(
            f"{path.parent} was converted from other weights (sha256 {converted_from[:12]}…) than "
            f"{WEIGHTS_FILE} (sha256 {digest[:12]}…): repackage with --cpu-runtime openvino"
        )
    if networks != list(names):
        raise ArtifactError(
            f"{path.parent} holds the networks {', '.join(networks)}, not the {', '.join(names)} this "
            "backend runs: repackage with --cpu-runtime openvino"
        )


def package(predictor: Any, model_dir: Path) -> Path:
    """Store the predictor's conversion in the artifact directory (``openvino/``), as packaging does."""
    destination = Path(model_dir) / RUNTIME_DIR
    convert(networks_of(predictor), destination, weights_digest(model_dir))
    return destination


def networks_of(predictor: Any) -> list[Network]:
    runtime_networks = getattr(predictor, "runtime_networks", None)
    if runtime_networks is None:
        raise ArtifactError(
            f"CPU_RUNTIME=openvino runs the built-in backends' networks; the model is a "
            f"{type(predictor).__name__}, which names none (a custom model_fn): unset CPU_RUNTIME"
        )
    return list(runtime_networks())


def locate(model_dir: Path, networks: Sequence[Network], cache_dir: Path) -> Path:
    """The conversion to use: the artifact's own, else the cache's, else a new one in the cache."""
    digest = weights_digest(model_dir)
    names = [network.name for network in networks]
    packaged = Path(model_dir) / RUNTIME_DIR
    if packaged.is_dir():
        read_manifest(packaged, digest, names)
        return packaged
    cached = Path(cache_dir) / digest[:32]
    if (cached / MANIFEST_FILE).is_file():
        read_manifest(cached, digest, names)
        return cached
    started = time.perf_counter()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    # Written beside its final place, then renamed: a second model copy converting at the same time,
    # or a start killed half-way, never leaves a partial conversion under the key.
    staging = Path(tempfile.mkdtemp(prefix=f".{digest[:12]}-", dir=cache_dir))
    try:
        convert(networks, staging, digest)
        try:
            os.replace(staging, cached)
        except OSError:  # another copy got there first
            if not (cached / MANIFEST_FILE).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "converted %s for OpenVINO into %s in %.1f s", ", ".join(names), cached, time.perf_counter() - started
    )
    return cached


def _compiled_runner(compiled: Any, fallback: Run) -> Run:
    def run(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if any(0 in tensor.shape for tensor in inputs):
            return fallback(*inputs)
        results = compiled([tensor.detach().float().contiguous().numpy() for tensor in inputs])
        # The plugin reuses its output buffers on the next call: copy them out.
        return tuple(torch.from_numpy(results[index].copy()) for index in range(len(compiled.outputs)))

    return run


def apply(
    predictor: Any,
    model_dir: Path,
    precision: CpuPrecision,
    cache_dir: Path = DEFAULT_CPU_RUNTIME_CACHE_DIR,
) -> None:
    """Run the predictor's networks in OpenVINO at `precision` from now on (called once, at load)."""
    networks = networks_of(predictor)
    ov = _openvino()
    check_precision(precision)
    directory = locate(model_dir, networks, cache_dir)
    core = ov.Core()
    options = {
        "INFERENCE_PRECISION_HINT": _PRECISION_HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        # The model copy's share of the CPU, as torch's own intra-op threads have it.
        "INFERENCE_NUM_THREADS": str(torch.get_num_threads()),
    }
    for network in networks:
        compiled = core.compile_model(str(directory / f"{network.name}.xml"), "CPU", options)
        network.install(_compiled_runner(compiled, network.module))
