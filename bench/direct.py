"""The direct predictor, in a process of its own: `python -m bench.direct MODEL_DIR PHOTO`.

It loads the artifact's predictor, decodes the photo once and warms up, as the server process does,
then runs one prediction for each line it reads on stdin and answers each with a line on stdout.
The "served vs direct" table times these calls against POST /invocations: both sides are then a
fresh process holding one model under the same heap policy, so the difference is what serving adds
(HTTP, decoding, encoding), not where the predictor happens to live (the benchmark process holds
every backend's model and detections, and was measured 4-6 % slower than a server's model thread).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import REPO_ROOT, heap_policy, server_env


def main() -> None:
    from inference_server import allocator

    allocator.apply(heap_policy())
    from inference_server import artifact, decoding

    model_dir, photo = Path(sys.argv[1]), Path(sys.argv[2])
    predictor = artifact.load_predictor(model_dir)
    image = decoding.decode_image(
        photo.read_bytes(), "image/jpeg", input_format=predictor.input_format, max_pixels=10**9
    )
    predictor(image)  # the warm-up
    print("ready", flush=True)
    for _ in sys.stdin:
        predictor(image)
        print("done", flush=True)


class DirectPredictor:
    """The parent's handle: call() runs one prediction in the child and returns when it is done."""

    def __init__(self, model_dir: Path, photo: Path, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.direct", str(model_dir), str(photo)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=server_env(),
                cwd=REPO_ROOT,
                text=True,
            )
        # Both pipes exist: Popen was given PIPE for each.
        assert self.process.stdin is not None and self.process.stdout is not None
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        self._expect("ready")

    def _expect(self, word: str) -> None:
        line = self.stdout.readline().strip()
        if line != word:
            raise SystemExit(f"bench.direct answered {line!r} instead of {word!r}; see its log")

    def __call__(self) -> None:
        self.stdin.write("go\n")
        self.stdin.flush()
        self._expect("done")

    def stop(self) -> None:
        self.stdin.close()
        self.process.wait(timeout=60)


if __name__ == "__main__":
    main()
