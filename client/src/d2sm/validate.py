"""What `register` (and `serve`) check about a model.tar.gz before anything is uploaded or served.

metadata.json is checked by the server's own validator (inference_server.artifact.read_metadata,
pydantic only, no torch), run in a subprocess from the repository's container/ folder, so there is
one definition of a valid artifact and the client never imports the container package. Without
that folder the client checks the file names and the metadata's required keys, and says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from .errors import CliError
from .progress import note

# The artifact layout (container/inference_server/artifact.py).
METADATA_FILE = "metadata.json"
CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "model_final.pth"
BACKENDS = ("detectron2", "torchvision")
# A Mask R-CNN's weights are tens of MB at the smallest (R50-FPN: ~170 MB); less is not a model.
MIN_WEIGHTS_BYTES = 1 << 20
MIN_TARBALL_BYTES = 1 << 10
# The server's own check, run with the container folder on PYTHONPATH; prints one line on failure.
SERVER_CHECK = """
import sys
from inference_server.artifact import ArtifactError, read_metadata
try:
    read_metadata(sys.argv[1])
except ArtifactError as error:
    print(error, file=sys.stderr)
    sys.exit(3)
"""


def find_container_dir(explicit: Path | None) -> Path | None:
    """The folder holding the inference_server package: --container-dir, else ./container upwards."""
    if explicit is not None:
        candidates = [explicit]
    else:
        cwd = Path.cwd().resolve()
        candidates = [folder / "container" for folder in (cwd, *cwd.parents)]
    for folder in candidates:
        if (folder / "inference_server" / "artifact.py").is_file():
            return folder
    if explicit is not None:
        raise CliError(f"--container-dir {explicit} holds no inference_server package")
    return None


def container_env(container_dir: Path) -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(container_dir), os.environ.get("PYTHONPATH")])),
    )


def check_size(size: int, source: str) -> None:
    if size < MIN_TARBALL_BYTES:
        raise CliError(
            f"{source} is {size} bytes: too small to be a model.tar.gz (--no-check to register anyway)"
        )


def check_metadata(model_dir: Path, *, container_dir: Path | None, python: str | None) -> None:
    """metadata.json in an extracted artifact, through the server's validator when it is at hand."""
    folder = find_container_dir(container_dir)
    path = model_dir / METADATA_FILE
    if folder is not None:
        result = subprocess.run(
            [python or sys.executable, "-c", SERVER_CHECK, str(model_dir)],
            env=container_env(folder),
            capture_output=True,
            text=True,
        )
        if result.returncode == 3:
            raise CliError(result.stderr.strip().splitlines()[-1])
        if result.returncode == 0:
            return
        note(
            f"note: the server's metadata check did not run ({last_line(result.stderr)}); checking the basics"
        )
    else:
        note("note: no container/ folder here (--container-dir): checking metadata.json's basics only")
    try:
        metadata = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:
        raise CliError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(metadata, dict):
        raise CliError(f"{path} is invalid: not a JSON object")
    if metadata.get("backend") not in BACKENDS:
        raise CliError(f"{path} is invalid: backend: must be one of {', '.join(BACKENDS)}")
    names = metadata.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise CliError(f"{path} is invalid: class_names: must be a non-empty list of names")


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check_tarball(
    tarball: Path, *, container_dir: Path | None, python: str | None, skip: bool = False
) -> None:
    """Opens as a gzip tar, holds a metadata.json the server accepts, the files its backend needs,
    and weights of a plausible size."""
    if skip:
        return
    check_size(tarball.stat().st_size, str(tarball))
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            members = {m.name.removeprefix("./"): m for m in archive.getmembers() if m.isfile()}
            if METADATA_FILE not in members:
                raise CliError(
                    f"{tarball} has no {METADATA_FILE} at its top: build it with "
                    "`python -m inference_server.package` (or `d2sm register -- <packaging flags>`)"
                )
            with tempfile.TemporaryDirectory() as scratch:
                source = archive.extractfile(members[METADATA_FILE])
                (Path(scratch) / METADATA_FILE).write_bytes(source.read() if source else b"")
                check_metadata(Path(scratch), container_dir=container_dir, python=python)
                backend = json.loads((Path(scratch) / METADATA_FILE).read_bytes()).get("backend")
    except (tarfile.TarError, EOFError, OSError) as error:
        raise CliError(f"{tarball} is not a readable .tar.gz: {error}") from None
    needed = [WEIGHTS_FILE] + ([CONFIG_FILE] if backend == "detectron2" else [])
    missing = [name for name in needed if name not in members]
    if missing:
        raise CliError(f"{tarball} lacks {', '.join(missing)}, which the {backend} backend loads")
    size = members[WEIGHTS_FILE].size
    if size < MIN_WEIGHTS_BYTES:
        raise CliError(
            f"{tarball}: {WEIGHTS_FILE} is {size} bytes, too small for Mask R-CNN weights "
            "(--no-check to register anyway)"
        )
