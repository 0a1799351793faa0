"""Sessions, clients with retry config, stack outputs and botocore errors as one readable line."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from d2sm_contract import DEFAULT_APP_NAME, stack_name

from .errors import CliError

THROTTLING_CODES = {"ThrottlingException", "Throttling", "TooManyRequestsException", "SlowDown"}


def error_code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


def model_error_detail(original: str) -> str:
    """The container's error object as `code: message` (one line), else its text on one line."""
    try:
        error = json.loads(original)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return " ".join(original.split())[:300]


def describe_client_error(error: ClientError) -> str:
    """One line: the service's code and message (ModelError: the container's own message)."""
    info = error.response.get("Error", {})
    code, message = info.get("Code", "Error"), info.get("Message", str(error))
    if code in THROTTLING_CODES:
        attempts = error.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        return f"throttled after {attempts} attempts ({code}: {message}); lower --concurrency or retry later"
    original = error.response.get("OriginalMessage")
    if code == "ModelError" and original:
        status = error.response.get("OriginalStatusCode", "?")
        return f"the model answered {status}: {model_error_detail(original)}"
    return f"{code}: {message}"


def as_cli_error(action: str, error: Exception) -> CliError:
    """What botocore raised, as one line naming what was being done."""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return CliError(
            "no AWS credentials found: configure a profile (aws configure) or set AWS_ACCESS_KEY_ID"
        )
    if isinstance(error, NoRegionError):
        return CliError("no AWS region: pass --region or set AWS_REGION")
    if isinstance(error, ClientError):
        return CliError(f"{action}: {describe_client_error(error)}")
    return CliError(f"{action}: {error}")


@contextlib.contextmanager
def aws_errors(action: str) -> Iterator[None]:
    try:
        yield
    except (ClientError, BotoCoreError) as error:
        raise as_cli_error(action, error) from None
    except OSError as error:
        # upload_file and download_file read and write local files.
        where = f" ({error.filename})" if error.filename else ""
        raise CliError(f"{action}: {error.strerror or error}{where}") from None


@dataclass
class Aws:
    """One session for the whole command; clients are thread-safe and shared by worker threads."""

    region: str | None = None
    profile: str | None = None
    app_name: str = DEFAULT_APP_NAME
    max_attempts: int = 5

    @cached_property
    def session(self) -> boto3.Session:
        with aws_errors("opening an AWS session"):
            return boto3.Session(region_name=self.region, profile_name=self.profile)

    def client(self, service: str):
        # standard mode retries throttling and transient errors with backoff. total_max_attempts
        # counts the first call too (the dict's `max_attempts` would count retries only).
        config = Config(retries={"mode": "standard", "total_max_attempts": self.max_attempts})
        with aws_errors(f"creating a {service} client"):
            return self.session.client(service, config=config)

    @cached_property
    def s3(self):
        return self.client("s3")

    @cached_property
    def sagemaker(self):
        return self.client("sagemaker")

    @cached_property
    def runtime(self):
        return self.client("sagemaker-runtime")

    @classmethod
    def from_args(cls, args) -> Aws:
        return cls(
            region=args.region, profile=args.profile, app_name=args.app_name, max_attempts=args.max_attempts
        )

    def stack_name(self, suffix: str) -> str:
        return stack_name(self.app_name, suffix)

    def stack_outputs(self, suffix: str) -> dict[str, str]:
        """The outputs of `<app name>-<suffix>`, by OutputKey."""
        name = self.stack_name(suffix)
        cloudformation = self.client("cloudformation")
        try:
            stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
        except ClientError as error:
            if "does not exist" in error.response.get("Error", {}).get("Message", ""):
                raise CliError(
                    f"stack {name} is not deployed: deploy it, pass --app-name, or name the resource "
                    "with its flag"
                ) from None
            raise as_cli_error(f"reading the outputs of stack {name}", error) from None
        except BotoCoreError as error:
            raise as_cli_error(f"reading the outputs of stack {name}", error) from None
        return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}

    def stack_output(self, suffix: str, key: str) -> str:
        outputs = self.stack_outputs(suffix)
        if key not in outputs:
            raise CliError(
                f"stack {self.stack_name(suffix)} has no output {key} (it has: "
                f"{', '.join(sorted(outputs)) or 'none'}); redeploy it or pass the value as a flag"
            )
        return outputs[key]


def split_s3_uri(uri: str) -> tuple[str, str]:
    """s3://bucket/key/prefix -> (bucket, "key/prefix")."""
    if not uri.startswith("s3://"):
        raise CliError(f"{uri} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def require_in_service(aws: Aws, endpoint_name: str) -> None:
    """Fail with one line unless the endpoint exists and is InService."""
    try:
        status = aws.sagemaker.describe_endpoint(EndpointName=endpoint_name)["EndpointStatus"]
    except ClientError as error:
        if "Could not find endpoint" in error.response.get("Error", {}).get("Message", ""):
            raise CliError(f"endpoint {endpoint_name} does not exist") from None
        raise as_cli_error(f"describing endpoint {endpoint_name}", error) from None
    except BotoCoreError as error:
        raise as_cli_error(f"describing endpoint {endpoint_name}", error) from None
    if status != "InService":
        raise CliError(
            f"endpoint {endpoint_name} is {status}, not InService: wait for it or check its events"
        )
