"""How approvals reach people and come back: the approval topic and the key that signs the links."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_kms as kms
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cost_engine import topology

APPROVAL_TOPIC_KEY_ID = f"{topology.APPROVAL_TOPIC_CONSTRUCT_ID}Key"


class Approvals(Construct):
    """The topic the executors publish approval requests to (encrypted with a rotating key of its own,
    TLS only), mailing each approver; and the HMAC key of the approval links, which the executors sign
    and the API function checks."""

    def __init__(self, scope: Construct, construct_id: str, *, approver_emails: Sequence[str]) -> None:
        super().__init__(scope, construct_id)
        self.topic_key = kms.Key(
            self,
            APPROVAL_TOPIC_KEY_ID,
            description="Encrypts the Cost Execution Engine approval topic",
            enable_key_rotation=True,
        )
        self.topic = sns.Topic(
            self,
            topology.APPROVAL_TOPIC_CONSTRUCT_ID,
            display_name="Cost Execution Engine approvals",
            master_key=self.topic_key,
            enforce_ssl=True,
        )
        for email in approver_emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        self.link_secret = secretsmanager.Secret(
            self,
            topology.APPROVAL_SECRET_CONSTRUCT_ID,
            description="Signs the Cost Execution Engine's approval links (HMAC-SHA256 key)",
            generate_secret_string=secretsmanager.SecretStringGenerator(password_length=64, exclude_punctuation=True),
        )
