"""Small readers for synthesized CloudFormation (plain dicts), shared by the infra tests."""

import json
from collections.abc import Iterator
from typing import Any

from aws_cdk import CfnElement, Stack

from constructs import IConstruct


def flatten(value: Any) -> str:
    """Render an intrinsic as one string: Ref -> <Id>, GetAtt -> <Id.Attr>, Join concatenated."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((function, argument),) = value.items()
        if function == "Ref":
            return f"<{argument}>"
        if function == "Fn::GetAtt":
            return f"<{argument[0]}.{argument[1]}>"
        if function == "Fn::Join":
            return argument[0].join(flatten(part) for part in argument[1])
        if function == "Fn::Sub":
            return argument
        if function == "Fn::GetStackOutput":
            return f"<{argument['StackName']}:{argument['OutputName']}>"
    return json.dumps(value, sort_keys=True)


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def logical_id(construct: IConstruct) -> str:
    """Logical ID of an L1 resource, or of an L2 construct's default child."""
    resource = construct.node.default_child or construct
    assert isinstance(resource, CfnElement), f"{construct.node.path} is no CloudFormation element"
    return Stack.of(construct).get_logical_id(resource)


def policy_documents(template: dict) -> Iterator[tuple[str, str, dict]]:
    """(logical id, kind, document) for every policy document; kind is `identity` or `resource`."""
    for resource_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::IAM::Policy":
            yield resource_id, "identity", properties["PolicyDocument"]
        elif resource["Type"] == "AWS::IAM::Role":
            for inline in properties.get("Policies", []):
                yield resource_id, "identity", inline["PolicyDocument"]
        elif resource["Type"] in ("AWS::S3::BucketPolicy", "AWS::SNS::TopicPolicy"):
            yield resource_id, "resource", properties["PolicyDocument"]
        elif resource["Type"] == "AWS::KMS::Key":
            yield resource_id, "resource", properties["KeyPolicy"]


def statements(document: dict) -> list[dict]:
    return as_list(document["Statement"])
