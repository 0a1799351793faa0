"""Where the infrastructure and the container must agree (each side owns its half)."""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

import d2sm_contract as contract
from inference_server.content_types import JSON
from inference_server.decoding import DECODERS
from inference_server.settings import (
    MAX_BATCH_PAYLOAD_MB,
    BatchRecordErrors,
    InferenceMode,
    Settings,
    SettingsError,
)
from sagemaker_constructs.images import InferenceImages
from sagemaker_constructs.packaged_model import InferenceMode as DeployedMode
from sagemaker_constructs.registry import SUPPORTED_CONTENT_TYPES, SUPPORTED_RESPONSE_MIME_TYPES
from tests.synthesis import REPO_ROOT

# Where the contract this process imported lives (the installed package maps client/src/d2sm_contract).
CONTRACT_ROOT = Path(contract.__file__).resolve().parents[1]


def test_every_inference_mode_the_stacks_set_is_one_the_container_reads():
    assert set(get_args(DeployedMode)) == {mode.value for mode in InferenceMode}


def test_the_model_package_advertises_exactly_the_content_types_the_container_decodes():
    assert list(DECODERS) == SUPPORTED_CONTENT_TYPES
    assert SUPPORTED_RESPONSE_MIME_TYPES == [JSON]


def test_the_dockerfile_has_the_two_targets_the_image_assets_build():
    stages = re.findall(
        r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", (REPO_ROOT / "container" / "Dockerfile").read_text(), re.M | re.I
    )

    assert {InferenceImages.GPU_TARGET, InferenceImages.CPU_TARGET} <= set(stages)


def container_environments(synth) -> list[dict[str, str]]:
    """Every environment the synthesized stacks give the container: each Model's, and the one the
    batch pipeline's CreateTransformJob call passes (inside the state machine's definition)."""
    found = []
    for key in ["shared", *synth.stacks.modes]:
        for resource in synth.resources(key, "AWS::SageMaker::Model").values():
            found.append(resource["Properties"]["PrimaryContainer"]["Environment"])
        for resource in synth.resources(key, "AWS::StepFunctions::StateMachine").values():
            definition = resource["Properties"]["DefinitionString"]
            pieces = definition["Fn::Join"][1] if isinstance(definition, dict) else [definition]
            text = "".join(piece for piece in pieces if isinstance(piece, str))
            found += [json.loads(match) for match in re.findall(r'"Environment":(\{[^}]*\})', text)]
    return found


def test_the_container_accepts_every_environment_the_stacks_set(synth):
    environments = container_environments(synth)
    assert {name for env in environments for name in env} >= {
        contract.INFERENCE_MODE_ENV,
        contract.BATCH_RECORD_ERRORS_ENV,
        contract.REQUEST_TIMEOUT_ENV,
    }
    for env in environments:
        settings = Settings.from_env(env)
        if contract.INFERENCE_MODE_ENV in env:
            assert settings.mode.value == env[contract.INFERENCE_MODE_ENV]
        if contract.REQUEST_TIMEOUT_ENV in env:
            assert settings.request_timeout_s == int(env[contract.REQUEST_TIMEOUT_ENV])
        if contract.BATCH_RECORD_ERRORS_ENV in env:
            assert settings.batch_record_errors.value == env[contract.BATCH_RECORD_ERRORS_ENV]


def test_every_variable_the_stacks_set_is_one_the_container_reads(synth):
    """A name the container does not read would be ignored silently; an invalid value of one it
    reads is refused, naming it."""
    names = {name for env in container_environments(synth) for name in env}
    for name in sorted(names):
        with pytest.raises(SettingsError, match=f"{name}='not-a-valid-value' is invalid"):
            Settings.from_env({name: "not-a-valid-value"})


def test_the_contract_names_the_modes_and_the_payload_cap_the_container_uses():
    assert set(contract.MODES) == {mode.value for mode in InferenceMode} == set(get_args(DeployedMode))
    assert contract.MAX_TRANSFORM_PAYLOAD_MB == MAX_BATCH_PAYLOAD_MB
    assert BatchRecordErrors.OBJECT.value == contract.BATCH_RECORD_ERRORS_AS_OBJECTS


def test_the_log_format_d2sm_serve_asks_for_is_one_the_container_knows():
    settings = Settings.from_env({contract.LOG_FORMAT_ENV: contract.LOG_FORMAT_TEXT})
    assert settings.log_format.value == contract.LOG_FORMAT_TEXT != Settings.from_env({}).log_format.value


def test_the_contract_needs_nothing_but_the_standard_library():
    """The client and the CDK app both import it: it must not pull in either one's dependencies.
    `-S`: no site-packages at all, only the contract's folder (PYTHONPATH)."""
    code = (
        "import sys, d2sm_contract; "
        "print(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names) - {'__main__'}))"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": str(CONTRACT_ROOT)},
        capture_output=True,
        text=True,
        cwd="/",
    )
    assert (result.returncode, result.stdout) == (0, "['d2sm_contract']\n"), result.stderr


def test_neither_side_imports_the_other():
    """The CDK app never imports the client (only the contract), and the client never the CDK app."""
    cdk = [
        REPO_ROOT / "app.py",
        *(REPO_ROOT / "stacks").rglob("*.py"),
        *(REPO_ROOT / "constructs").rglob("*.py"),
    ]
    client = (REPO_ROOT / "client" / "src" / "d2sm").rglob("*.py")
    imports_client = re.compile(r"^\s*(from|import) d2sm\b(?!_contract)", re.M)
    imports_cdk_app = re.compile(
        r"^\s*(from|import) (aws_cdk|stacks|sagemaker_constructs|constructs)\b", re.M
    )
    assert [p for p in cdk if imports_client.search(p.read_text())] == []
    assert [p for p in client if imports_cdk_app.search(p.read_text())] == []
