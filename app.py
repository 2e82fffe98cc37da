#!/usr/bin/env python3
"""The CDK app: one stack, checked by cdk-nag's AWS Solutions rules on every synth."""

from __future__ import annotations

import sys
from pathlib import Path

# The stack reads the topology from the shared package, which on AWS ships as a Lambda layer.
sys.path.insert(0, str(Path(__file__).resolve().parent / "layers" / "shared" / "python"))

from aws_cdk import App, Aspects
from cdk_nag import AwsSolutionsChecks

from infra.nag import suppress_accepted_findings
from infra.stack import CostExecutionEngineStack

app = App()
stack = CostExecutionEngineStack(
    app, "CostExecutionEngine", description="Cost Execution Engine: carries out cost-optimization recommendations"
)
suppress_accepted_findings(stack)
Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
app.synth()
