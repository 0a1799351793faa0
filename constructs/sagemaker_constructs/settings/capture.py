"""Data capture: a sample of requests and responses written under the artifacts bucket."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from .base import FieldProblems, Section, between


class DataCaptureConfig(Section):
    """Instance-based real-time and async endpoints only (SageMaker has no capture for serverless)."""

    sampling_percentage: Annotated[int, between(1, 100)] = 10
    capture: Literal["input", "output", "input_and_output"] = "input_and_output"
    # Lifecycle expiry of the captured objects (they hold user images).
    expiry_days: Annotated[int, between(1, 3650)] = 30

    @property
    def capture_modes(self) -> list[str]:
        return {"input": ["Input"], "output": ["Output"], "input_and_output": ["Input", "Output"]}[
            self.capture
        ]


def refuse_data_capture_on_serverless(data: Any) -> None:
    if isinstance(data, dict) and "data_capture" in data:
        raise FieldProblems(
            [
                (
                    "data_capture",
                    "SageMaker does not capture data on serverless endpoints: use an instance-based "
                    "real-time or async endpoint (realtime.data_capture, async.data_capture) "
                    f"(got {data['data_capture']!r})",
                )
            ]
        )
