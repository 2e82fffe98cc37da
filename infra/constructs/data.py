"""The engine's records: one DynamoDB table per `topology.TABLES` entry."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct

from cost_engine import topology


class Data(Construct):
    """The executions, the audit log, the recommendations and the limits' shared state, each kept when
    the stack goes."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.tables = {spec.construct_id: self._table(spec) for spec in topology.TABLES}

    def table(self, spec: topology.Table) -> dynamodb.Table:
        return self.tables[spec.construct_id]

    def table_arns(self, specs: Iterable[topology.Table], *, with_indexes: bool) -> list[str]:
        """The tables' ARNs, for a policy; with their indexes' ARNs after each table's when asked."""
        resources = []
        for spec in specs:
            arn = self.table(spec).table_arn
            resources.append(arn)
            if with_indexes:
                resources.extend(f"{arn}/index/{index.name}" for index in spec.indexes)
        return resources

    def _table(self, spec: topology.Table) -> dynamodb.Table:
        def key(name: str) -> dynamodb.Attribute:
            return dynamodb.Attribute(name=name, type=dynamodb.AttributeType.STRING)

        table = dynamodb.Table(
            self,
            spec.construct_id,
            partition_key=key(spec.partition_key),
            sort_key=key(spec.sort_key) if spec.sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            # Execution records and the audit log outlive the stack.
            removal_policy=RemovalPolicy.RETAIN,
        )
        for index in spec.indexes:
            table.add_global_secondary_index(
                index_name=index.name,
                partition_key=key(index.partition_key),
                sort_key=key(index.sort_key),
                projection_type=dynamodb.ProjectionType(index.projection_type),
            )
        return table
