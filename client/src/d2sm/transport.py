"""Where a request goes: a SageMaker endpoint (InvokeEndpoint) or a server's URL (POST /invocations,
e.g. `d2sm serve`), with the same answers; and retries of the answers that say "try again later"."""

from __future__ import annotations

import json
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from .aws import Aws, as_cli_error, error_code
from .errors import CliError

if TYPE_CHECKING:
    import urllib3

# The container answers these when it cannot take the request now (model loading, queue full).
RETRY_STATUSES = {429, 503}
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
MAX_BACKOFF_S = 30.0


class Retryable(Exception):
    """The server said it cannot take the request now; `after_s` is when it said to retry."""

    def __init__(self, message: str, after_s: float | None):
        super().__init__(message)
        self.after_s = after_s


class Cancelled(Exception):
    """The run was interrupted before this request was sent (again)."""


def error_detail(body: bytes | str) -> tuple[str, float | None]:
    """The container's error object as `code: message`, and its retry_after_s; the raw text else."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        error = json.loads(text)["error"]
        detail = f"{error['code']}: {error['message']}"
        after = error.get("retry_after_s")
        return detail, float(after) if isinstance(after, (int, float)) else None
    except (ValueError, KeyError, TypeError):
        return " ".join(text.split())[:300], None


def retry_after_header(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare for a model server; back off instead


@dataclass
class EndpointTarget:
    aws: Aws
    endpoint: str
    component: str | None = None
    variant: str | None = None

    @property
    def name(self) -> str:
        return self.endpoint + (f"/{self.component}" if self.component else "")

    def invoke(self, body: bytes, content_type: str, attributes: str | None) -> bytes:
        request = {"EndpointName": self.endpoint, "ContentType": content_type, "Accept": "application/json"}
        if attributes:
            request["CustomAttributes"] = attributes
        if self.component:
            request["InferenceComponentName"] = self.component
        if self.variant:
            request["TargetVariant"] = self.variant
        try:
            response = self.aws.runtime.invoke_endpoint(Body=body, **request)
        except ClientError as error:
            # The container's own 503/429 reaches us as ModelError with its status and body; AWS's
            # throttling was already retried by botocore (standard mode).
            status = error.response.get("OriginalStatusCode")
            if error_code(error) == "ModelError" and status in RETRY_STATUSES:
                detail, after = error_detail(error.response.get("OriginalMessage", ""))
                raise Retryable(
                    f"invoking {self.name}: the model answered {status}: {detail}", after
                ) from None
            raise as_cli_error(f"invoking {self.name}", error) from None
        except BotoCoreError as error:
            raise as_cli_error(f"invoking {self.name}", error) from None
        return response["Body"].read()


@dataclass
class UrlTarget:
    """A server speaking SageMaker's container contract, e.g. `d2sm serve` on 127.0.0.1."""

    url: str
    concurrency: int = 4
    timeout_s: float = 120.0
    pool: urllib3.PoolManager = field(init=False, repr=False)

    def __post_init__(self):
        import urllib3  # botocore's own HTTP library, so no new dependency

        self.url = self.url.rstrip("/")
        if not self.url.startswith(("http://", "https://")):
            raise CliError(f"--url {self.url} must start with http:// or https://")
        self.pool = urllib3.PoolManager(
            maxsize=max(1, self.concurrency),
            retries=False,
            timeout=urllib3.Timeout(connect=10, read=self.timeout_s),
        )

    @property
    def name(self) -> str:
        return self.url

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        import urllib3

        try:
            return self.pool.request(method, self.url + path, body=body, headers=headers or {})
        except urllib3.exceptions.HTTPError as error:
            # "HTTPConnection(host=..., port=...): Failed to establish ..." -> the part after the repr.
            reason = str(getattr(error, "reason", None) or error).split("): ", 1)[-1]
            hint = " (is the server running? `d2sm serve` starts one)" if "refused" in reason else ""
            raise CliError(f"cannot reach {self.url}: {reason}{hint}") from None

    def invoke(self, body: bytes, content_type: str, attributes: str | None) -> bytes:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if attributes:
            headers[CUSTOM_ATTRIBUTES_HEADER] = attributes
        response = self.request("POST", "/invocations", body, headers)
        if response.status == 200:
            return response.data
        detail, after = error_detail(response.data)
        if response.status in RETRY_STATUSES:
            after = after if after is not None else retry_after_header(response.headers.get("Retry-After"))
            raise Retryable(f"{self.url} answered {response.status}: {detail}", after)
        raise CliError(f"{self.url} answered {response.status}: {detail}")


def with_retries(call, retries: int, cancel: threading.Event | None = None, rng: random.Random | None = None):
    """call() until it does not raise Retryable, at most `retries` more times, waiting what the
    server asked (retry_after_s or Retry-After; else exponential backoff) plus jitter, so that many
    clients refused at once do not come back at once. A set `cancel` stops before the next try."""
    rng = rng or random.Random()
    cancel = cancel or threading.Event()
    for attempt in range(retries + 1):
        try:
            return call()
        except Retryable as refused:
            if attempt == retries:
                raise CliError(
                    f"{refused} (after {retries + 1} attempts: raise --retries or lower --concurrency)"
                ) from None
            delay = refused.after_s if refused.after_s is not None else min(MAX_BACKOFF_S, 0.5 * 2**attempt)
            delay += rng.uniform(0, 0.1 + 0.25 * delay)
            if cancel.wait(delay):
                raise Cancelled() from None
    raise AssertionError("unreachable")
