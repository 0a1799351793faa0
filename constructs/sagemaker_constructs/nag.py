"""cdk-nag acknowledgements and checkov skips, each with its reason, attached to the construct it
concerns."""

import json
from typing import Any

import jsii
from aws_cdk import Acknowledgment, CfnResource, Stack, Validations

from constructs import IConstruct, IValidation


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Suppress one AwsSolutions finding (e.g. `AwsSolutions-IAM5[Resource::*]`) on `scope`."""
    Validations.of(scope).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def skip_checkov(scope: IConstruct, check_id: str, reason: str) -> None:
    """Skip one checkov check (e.g. `CKV_AWS_116`) on `scope`'s resource, in checkov's own syntax:
    `Metadata: {checkov: {skip: [{id, comment}]}}` on the resource."""
    resource = scope.node.default_child or scope
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{scope.node.path} is not a CloudFormation resource")
    checkov = resource.get_metadata("checkov") or {"skip": []}
    checkov["skip"] = [*checkov["skip"], {"id": check_id, "comment": reason}]
    resource.add_metadata("checkov", checkov)


def acknowledge_wildcard_resources(scope: IConstruct, resources: list[str], reason: str) -> None:
    """Acknowledge IAM5 for prefix wildcards such as `<bucket ARN>/async/input/*`.

    cdk-nag names each finding after the resource as it renders it (Ref -> `<Name>`, GetAtt ->
    `<Logical.Attr>`, Fn::Join concatenated, anything else as compact JSON).
    """
    scope.node.add_validation(_AcknowledgeAtSynth(scope, list(resources), reason))


@jsii.implements(IValidation)
class _AcknowledgeAtSynth:
    """Resolves the resources once synthesis has settled cross-stack references (a bucket ARN from
    the shared stack renders as `Fn::GetStackOutput` only then), and acknowledges them as rendered."""

    def __init__(self, scope: IConstruct, resources: list[str], reason: str) -> None:
        self.scope, self.resources, self.reason = scope, resources, reason

    def validate(self) -> list[str]:
        stack = Stack.of(self.scope)
        for resource in self.resources:
            rendered = _as_nag_renders(stack.resolve(resource))
            acknowledge(self.scope, f"AwsSolutions-IAM5[Resource::{rendered}]", self.reason)
        return []


def _as_nag_renders(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Fn::Join" and argument[0] == "":
            return "".join(_as_nag_renders(part) for part in argument[1])
    return json.dumps(value, separators=(",", ":"))
