"""The S3 bucket for exec session recordings: private, encrypted, versioned, TLS-only, with a lifecycle.

Recordings show everything an operator saw and typed in a pod, so the bucket is locked down by
default: every public access path blocked, ACLs disabled, SSE-S3 encryption, versioning (a
deleted or overwritten recording can be recovered), a policy refusing plain-HTTP access, and
expiry after the retention period so recordings are not kept forever by accident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass
class RecordingsBucketArgs:
    bucket: str  # the bucket's name (chosen by the program, so the connector config is known at preview)
    prefix: str  # where the connector writes, and what the lifecycle rule applies to
    retention_days: int
    partition: str = "aws"


def tls_only_policy(bucket: str, partition: str = "aws") -> dict:
    """Deny any request to the bucket that does not use TLS."""
    arn = f"arn:{partition}:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [arn, f"{arn}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


class RecordingsBucket(pulumi.ComponentResource):
    """A private bucket for session recordings."""

    bucket_name: pulumi.Output[str]

    def __init__(self, name: str, args: RecordingsBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("eks-access-connector:index:RecordingsBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, bucket=args.bucket, opts=child)
        on_bucket = pulumi.ResourceOptions(parent=self, depends_on=[bucket])
        aws.s3.BucketPublicAccessBlock(
            name,
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=on_bucket,
        )
        aws.s3.BucketOwnershipControls(
            name,
            bucket=bucket.id,
            rule=aws.s3.BucketOwnershipControlsRuleArgs(object_ownership="BucketOwnerEnforced"),
            opts=on_bucket,
        )
        aws.s3.BucketServerSideEncryptionConfiguration(
            name,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
                        sse_algorithm="AES256"
                    ),
                    bucket_key_enabled=True,
                )
            ],
            opts=on_bucket,
        )
        aws.s3.BucketVersioning(
            name,
            bucket=bucket.id,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=on_bucket,
        )
        aws.s3.BucketLifecycleConfiguration(
            name,
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-recordings",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=args.prefix),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.retention_days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=30
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            opts=on_bucket,
        )
        aws.s3.BucketPolicy(
            name, bucket=bucket.id, policy=json.dumps(tls_only_policy(args.bucket, args.partition)), opts=on_bucket
        )
        self.bucket_name = bucket.bucket
        self.register_outputs({"bucketName": self.bucket_name})
