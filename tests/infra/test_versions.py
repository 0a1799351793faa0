"""Version pins: which registered model package version each mode deploys, and how a pin shows in a diff."""

import pytest

from sagemaker_constructs.settings import AppConfig, ModelVersion
from tests.synthesis import cdk_diff, needs_cdk_cli, synthesize_config

from .cfn import flatten
from .config_helpers import load, problem

GROUP_ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/detectron2-mask-rcnn"


# --- config ----------------------------------------------------------------------------------


def test_every_mode_follows_the_current_registration_by_default():
    config = AppConfig()

    assert config.deployed_versions() == {
        f"{mode}.model_version": ModelVersion() for mode in ("realtime", "async", "serverless", "batch")
    }
    assert all(version.is_current for version in config.deployed_versions().values())


def test_a_mode_pins_a_version_by_number_or_by_arn(tmp_path):
    config = load(tmp_path, {"realtime": {"model_version": 8}, "async": {"model_version": f"{GROUP_ARN}/12"}})

    assert config.realtime.model_version == ModelVersion(number=8)
    assert config.async_.model_version == ModelVersion(number=12, arn=f"{GROUP_ARN}/12")
    assert config.serverless.model_version.is_current
    assert config.model_dump(by_alias=True)["realtime"]["model_version"] == 8
    assert config.model_dump(by_alias=True)["serverless"]["model_version"] == "current"


ALLOWED = (
    'must be "current", a version number (1 or more), or a model package version ARN '
    "(arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>)"
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0, "0"),
        (-3, "-3"),
        ("8", "'8'"),
        ("latest", "'latest'"),
        (True, "True"),
        (f"{GROUP_ARN}", repr(GROUP_ARN)),
        ("arn:aws:sagemaker:eu-west-1:123456789012:model-package-group/detectron2-mask-rcnn", None),
    ],
)
def test_a_pin_must_be_current_a_version_number_or_a_version_arn(tmp_path, value, shown):
    shown = shown or repr(value)
    problem(
        tmp_path, {"realtime": {"model_version": value}}, f"realtime.model_version: {ALLOWED} (got {shown})"
    )


def test_a_pinned_arn_must_belong_to_this_apps_group(tmp_path):
    other = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/someone-else/3"

    problem(
        tmp_path,
        {"serverless": {"model_version": other}},
        "serverless.model_version: must be a model package version of this app's group "
        f"'detectron2-mask-rcnn' (model.package_group_name), not of 'someone-else' (got {other!r})",
    )


def test_the_group_of_a_pinned_arn_follows_a_configured_group_name(tmp_path):
    arn = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/shared-models/3"

    config = load(
        tmp_path, {"model": {"package_group_name": "Shared-Models"}, "batch": {"model_version": arn}}
    )

    assert config.batch.model_version.number == 3


def test_a_registration_that_is_not_approved_cannot_be_deployed(tmp_path):
    problem(
        tmp_path,
        {"model": {"approval_status": "PendingManualApproval"}, "realtime": {"model_version": 4}},
        "model.approval_status: must be Approved while async.model_version, batch.model_version, "
        'serverless.model_version deploy the current registration ("current"): SageMaker refuses to '
        "create a Model from a version that is not Approved; pin an approved version in those fields "
        "to register this one as PendingManualApproval (got 'PendingManualApproval')",
    )


def test_a_pending_registration_is_fine_when_every_enabled_mode_pins_a_version(tmp_path):
    config = load(
        tmp_path,
        {
            "model": {"approval_status": "PendingManualApproval"},
            "realtime": {"model_version": 7},
            "async": {"model_version": 7},
            "serverless": {"enabled": False},
            "batch": {"enabled": False},
        },
    )

    assert config.model.approval_status == "PendingManualApproval"


# --- templates -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pinned(tmp_path_factory):
    """Real-time pinned to version 7, then to version 8; the other modes follow the registration."""
    return {
        version: synthesize_config(
            tmp_path_factory.mktemp(f"pin{version}") / "cdk.out", {"realtime": {"model_version": version}}
        )
        for version in (7, 8)
    }


def test_a_pinned_mode_names_its_version_as_a_literal_in_its_own_template(pinned):
    _, model = pinned[8].only("realtime", "AWS::SageMaker::Model")

    assert flatten(model["Properties"]["PrimaryContainer"]["ModelPackageName"]) == (
        "arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:model-package/detectron2-mask-rcnn/8"
    )
    # A pinned mode no longer reads the current registration from SSM ...
    defaults = [p.get("Default") for p in pinned[8].template("realtime")["Parameters"].values()]
    assert "/Detectron2/model-package-arn" not in defaults
    # ... while the modes that follow it still do.
    _, async_model = pinned[8].only("async", "AWS::SageMaker::Model")
    assert "Ref" in async_model["Properties"]["PrimaryContainer"]["ModelPackageName"]


def test_changing_the_pin_changes_only_the_pinned_mode_stack(pinned):
    before, after = pinned[7], pinned[8]

    changed = [
        key
        for key in ("shared", "realtime", "async", "serverless", "batch")
        if before.template(key) != after.template(key)
    ]

    assert changed == ["realtime"]


@needs_cdk_cli
def test_cdk_diff_of_a_changed_pin_shows_the_move_from_version_7_to_8(pinned):
    """What a reviewer sees in the pull request that moves production from version 7 to 8."""
    status, output = cdk_diff(pinned[7], pinned[8], "Detectron2-Realtime")

    assert status == 1, output  # --fail: there is a difference
    assert '[-]     ":model-package/detectron2-mask-rcnn/7"' in output
    assert '[+]     ":model-package/detectron2-mask-rcnn/8"' in output
    assert "[~] AWS::SageMaker::Model Model" in output
