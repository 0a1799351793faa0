"""Alarms per endpoint, the topic they notify, and one dashboard for every mode of the app.

Metric names, namespaces and dimensions as SageMaker publishes them: invocation metrics in
`AWS/SageMaker` by EndpointName and VariantName, async queue metrics there by EndpointName only,
instance metrics (CPU, memory, GPU) in `/aws/sagemaker/Endpoints` by EndpointName and VariantName.
ModelLatency and ModelSetupTime are in microseconds. There is no instance-count metric; the sample
count of CPUUtilization per minute is one sample per running instance (SageMaker's async FAQ).
A model run as an inference component has its invocation metrics by InferenceComponentName and its
instance metrics in `/aws/sagemaker/InferenceComponents`. A variant on instance pools publishes the same
metrics once more with an InstanceType dimension (SageMaker developer guide, "Monitor instance pools").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from aws_cdk import Duration, Stack, Token
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions

from constructs import Construct

from .settings import AlarmThresholds
from .storage import ArtifactStore

EndpointKind = Literal["realtime", "async", "serverless"]
INVOCATION_NAMESPACE = "AWS/SageMaker"
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
COMPONENT_INSTANCE_NAMESPACE = "/aws/sagemaker/InferenceComponents"
PERIOD = Duration.minutes(1)
P50, P99 = cloudwatch.Stats.percentile(50), cloudwatch.Stats.percentile(99)
MICROSECONDS_PER_MS = 1000


@dataclass(frozen=True)
class EndpointMetrics:
    """The CloudWatch metrics of one endpoint variant, by the endpoint's (literal) name, or of the
    inference component `inference_component_name` (literal) on it."""

    endpoint_name: str
    variant_name: str
    kind: EndpointKind
    inference_component_name: str | None = None
    # The instance pools' types (priority order); empty for a variant on one instance type.
    instance_types: tuple[str, ...] = ()

    @property
    def instance_based(self) -> bool:
        return self.kind != "serverless"

    def invocation(self, name: str, statistic: str = cloudwatch.Stats.SUM, label: str | None = None):
        return self._metric(INVOCATION_NAMESPACE, name, statistic, label, variant=True)

    def queue(self, name: str, statistic: str = cloudwatch.Stats.MAXIMUM, label: str | None = None):
        """Async queue metrics: published by EndpointName only."""
        return self._metric(INVOCATION_NAMESPACE, name, statistic, label, variant=False)

    def instance(self, name: str, statistic: str = cloudwatch.Stats.AVERAGE, label: str | None = None):
        namespace = (
            INSTANCE_NAMESPACE if self.inference_component_name is None else COMPONENT_INSTANCE_NAMESPACE
        )
        return self._metric(namespace, name, statistic, label, variant=True)

    def instance_count(self) -> cloudwatch.Metric:
        return self.instance("CPUUtilization", cloudwatch.Stats.SAMPLE_COUNT, "instances")

    def of_type(self, instance_type: str, metric: cloudwatch.Metric) -> cloudwatch.Metric:
        """`metric` of this variant's instances of one pool's type (the InstanceType dimension)."""
        return metric.with_(
            dimensions_map={**(metric.dimensions or {}), "InstanceType": instance_type},
            label=f"{metric.label} {instance_type}" if metric.label else instance_type,
        )

    def model_errors(self) -> cloudwatch.Metric:
        """Requests the model failed: InvocationModelErrors, or InvocationFailures for async."""
        return self.invocation("InvocationFailures" if self.kind == "async" else "InvocationModelErrors")

    def _metric(self, namespace, name, statistic, label, *, variant) -> cloudwatch.Metric:
        if self.inference_component_name is not None:
            dimensions = {"InferenceComponentName": self.inference_component_name}
        else:
            dimensions = {"EndpointName": self.endpoint_name}
            if variant:
                dimensions["VariantName"] = self.variant_name
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map=dimensions,
            statistic=statistic,
            period=PERIOD,
            label=label,
        )


class AlarmTopic(Construct):
    """The SNS topic every alarm notifies: encrypted with the app's key, TLS only, optional e-mail."""

    def __init__(
        self, scope: Construct, construct_id: str, *, store: ArtifactStore, email: str | None
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Topic", master_key=store.key, enforce_ssl=True)
        if email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        # CloudWatch publishes to the encrypted topic only if it may use the key, and the TLS-only
        # topic policy replaces SNS's default one, which let CloudWatch publish: both allowed again
        # for this account's alarms.
        store.let_alarms_notify_through_key()
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            )
        )


class EndpointAlarms(Construct):
    """Alarms on one endpoint; `rollback` are those a deployment rolls back on.

    Missing data is not breaching: an idle endpoint (or an async one at zero instances) is healthy.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        metrics: EndpointMetrics,
        thresholds: AlarmThresholds,
        topic: sns.ITopic | None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.metrics, self.thresholds, self.topic = metrics, thresholds, topic
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        latency_ms = getattr(
            thresholds.model_latency_p99_ms, "async_" if metrics.kind == "async" else metrics.kind
        )

        self.rollback = [
            self._alarm(
                "Invocation5XXErrors",
                metrics.invocation("Invocation5XXErrors"),
                thresholds.invocation_5xx_errors,
                "The endpoint answered 5XX (the container failed or timed out).",
            ),
            self._alarm(
                "ModelErrors",
                metrics.model_errors(),
                thresholds.model_errors,
                "The model failed requests.",
            ),
            self._alarm(
                "ModelLatencyP99",
                metrics.invocation("ModelLatency", P99),
                latency_ms * MICROSECONDS_PER_MS,
                f"p99 model latency above {latency_ms} ms.",
            ),
        ]
        self._alarm(
            "Invocation4XXErrors",
            metrics.invocation("Invocation4XXErrors"),
            thresholds.invocation_4xx_errors,
            "Many requests were refused as invalid (a client sends bad input).",
        )
        if metrics.instance_based:
            self._alarm(
                "MemoryUtilization",
                metrics.instance("MemoryUtilization"),
                thresholds.memory_utilization_percent,
                "Instance memory nearly full: the next large image may be killed.",
            )
        if metrics.kind == "async":
            self._alarm(
                "Backlog",
                metrics.queue("ApproximateBacklogSize"),
                thresholds.async_backlog,
                "The async queue is long: scaling is at its maximum or instances fail to start.",
            )
            self._alarm(
                "OldestRequestAge",
                metrics.queue("ApproximateAgeOfOldestRequest"),
                thresholds.async_oldest_request_age_seconds,
                "The oldest queued async request has waited too long.",
            )

    def _alarm(self, name: str, metric: cloudwatch.Metric, threshold: float, why: str) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            name,
            metric=metric,
            threshold=threshold,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=self.thresholds.evaluation_minutes,
            datapoints_to_alarm=self.thresholds.datapoints_to_alarm,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            alarm_description=f"{self.metrics.endpoint_name}: {why}",
        )
        if self.topic is not None:
            alarm.add_alarm_action(cloudwatch_actions.SnsAction(self.topic))
        self.alarms[name] = alarm
        return alarm


class InferenceDashboard(Construct):
    """One CloudWatch dashboard for the app: a row of graphs per endpoint mode.

    Endpoints are added by name (`add_endpoint`), which must be a literal: the dashboard lives in the
    shared stack, which must not depend on the mode stacks.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", default_interval=Duration.hours(3))
        self.endpoints: list[EndpointMetrics] = []

    def add_endpoint(self, title: str, metrics: EndpointMetrics) -> None:
        if Token.is_unresolved(metrics.endpoint_name):
            raise ValueError(f"{title}: the dashboard needs the endpoint's literal name")
        self.endpoints.append(metrics)
        invocations = (
            [] if metrics.kind == "async" else [metrics.invocation("Invocations", label="invocations")]
        )
        latency = [
            metrics.invocation("ModelLatency", P50, "model latency p50 (µs)"),
            metrics.invocation("ModelLatency", P99, "model latency p99 (µs)"),
        ]
        if metrics.kind == "serverless":
            latency += [
                metrics.invocation("ModelSetupTime", P50, "model setup (cold start) p50 (µs)"),
                metrics.invocation("ModelSetupTime", P99, "model setup (cold start) p99 (µs)"),
            ]
        row = [
            self._graph(
                f"{title}: requests and errors",
                [
                    *invocations,
                    metrics.invocation("Invocation4XXErrors", label="4XX"),
                    metrics.invocation("Invocation5XXErrors", label="5XX"),
                    metrics.model_errors().with_(label="model errors"),
                ],
            ),
            self._graph(f"{title}: latency", latency),
        ]
        if metrics.kind == "async":
            row.append(
                self._graph(
                    f"{title}: queue",
                    [
                        metrics.queue("ApproximateBacklogSize", label="backlog"),
                        metrics.queue("ApproximateAgeOfOldestRequest", label="oldest request age (s)"),
                    ],
                )
            )
        if metrics.instance_based:
            row += [
                self._graph(
                    f"{title}: utilization (%)",
                    [
                        metrics.instance(name, label=label)
                        for name, label in (
                            ("CPUUtilization", "CPU (100 per vCPU)"),
                            ("MemoryUtilization", "memory"),
                            ("GPUUtilization", "GPU (100 per GPU)"),
                            ("GPUMemoryUtilization", "GPU memory"),
                        )
                    ],
                ),
                self._graph(f"{title}: instances", [metrics.instance_count()]),
            ]
        per_type = self._per_instance_type(title, metrics)
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(markdown=f"## {title}: `{metrics.endpoint_name}`", width=24, height=1)
        )
        self.dashboard.add_widgets(*row)
        if per_type:
            self.dashboard.add_widgets(*per_type)

    def _per_instance_type(self, title: str, metrics: EndpointMetrics) -> list[cloudwatch.GraphWidget]:
        """Instance pools: which types the endpoint runs (instances per type) and how each serves."""
        if not metrics.instance_types:
            return []
        latency = metrics.invocation("ModelLatency", P99, "p99 (µs)")
        return [
            self._graph(
                f"{title}: instances per type (priority order)",
                [metrics.of_type(t, metrics.instance_count()) for t in metrics.instance_types],
            ),
            self._graph(
                f"{title}: model latency p99 per type (µs)",
                [metrics.of_type(t, latency) for t in metrics.instance_types],
            ),
        ]

    @staticmethod
    def _graph(title: str, metrics: list[cloudwatch.IMetric]) -> cloudwatch.GraphWidget:
        return cloudwatch.GraphWidget(title=title, left=metrics, width=6, height=6)
