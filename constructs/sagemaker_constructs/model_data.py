"""Where the model.tar.gz lives: an S3 asset built from a local file, or an existing s3:// object."""

import tarfile
from pathlib import Path

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets

from constructs import Construct


class ModelData(Construct):
    """`location` is an `s3://bucket/key` URI or the absolute path of a local `.tar.gz`."""

    def __init__(self, scope: Construct, construct_id: str, *, location: str) -> None:
        super().__init__(scope, construct_id)
        if location.startswith("s3://"):
            bucket_name, key = location.removeprefix("s3://").split("/", 1)
            bucket = s3.Bucket.from_bucket_name(self, "Bucket", bucket_name)
            self.s3_url = location
            self.local_path: Path | None = None
        else:
            self.local_path = Path(location)
            asset = s3_assets.Asset(self, "Asset", path=location)
            bucket, key = asset.bucket, asset.s3_object_key
            self.s3_url = asset.s3_object_url
        self._object_arn = bucket.arn_for_objects(key)

    def holds(self, member: str) -> bool | None:
        """Whether the local tarball has `member` (a path inside it); None where synth cannot tell:
        an s3:// object, or a file that is not a readable .tar.gz."""
        if self.local_path is None:
            return None
        try:
            with tarfile.open(self.local_path, "r:gz") as archive:
                return member in {name.removeprefix("./") for name in archive.getnames()}
        except (OSError, EOFError, tarfile.TarError):
            return None

    def grant_read(self, grantee: iam.IGrantable) -> iam.Grant:
        """Read access to exactly this object."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["s3:GetObject"], resource_arns=[self._object_arn]
        )
