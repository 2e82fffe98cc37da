"""The engine's Lambda functions: what each is built with, whichever construct it belongs to."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import jsii
from aws_cdk import BundlingOptions, BundlingOutput, DockerImage, Duration, ILocalBundling
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from cost_engine import topology
from cost_engine.environment import Deployment, function_environment
from infra.constructs.monitoring import Monitoring
from infra.permissions import EVENT_PUBLISH_ACTIONS, LIMITS_DELETE_ACTIONS, LOG_WRITE_ACTIONS, SECRET_READ_ACTIONS

# python3.14 is the newest runtime aws-cdk-lib knows, which is what cdk-nag's AwsSolutions-L1 demands,
# and Powertools publishes its v3 layer for it. arm64 (Graviton) costs less per GB-second than x86_64.
RUNTIME = lambda_.Runtime.PYTHON_3_14
ARCHITECTURE = lambda_.Architecture.ARM_64
# The public Powertools for AWS Lambda (Python) v3 layer (bundles pydantic), resolved at deploy time
# from the SSM parameter Powertools publishes per release, for the very release pinned in
# requirements.txt: the functions on AWS run the Powertools the tests ran.
POWERTOOLS_VERSION = re.search(
    r"^aws-lambda-powertools(?:\[[^\]]*\])?==([\w.]+)$",
    (topology.PROJECT_ROOT / "requirements.txt").read_text(),
    re.MULTILINE,
).group(1)  # type: ignore[union-attr]
POWERTOOLS_LAYER_PARAMETER = f"/aws/service/powertools/python/arm64/python3.14/{POWERTOOLS_VERSION}"
ASSET_EXCLUDES = ["**/__pycache__", "**/*.pyc"]
SHARED_LAYER_ID = "SharedLayer"
POWERTOOLS_LAYER_ID = "PowertoolsLayer"

# The shared layer ships its modules compiled: /opt is read-only on Lambda, so a module without its
# bytecode there is compiled again at every cold start. The bytecode must be the runtime's Python's, which
# the machine that synthesizes need not have: Pyodide's CPython (pinned in package.json, its major version
# the Python one) compiles it, under the Node.js the CDK runs on anyway. The .pyc are unchecked hash-based
# ones: the runtime trusts them without reading the sources, whose timestamps the asset's zip resets.
RUNTIME_PYTHON = RUNTIME.name.removeprefix("python")
LAYER_ROOT_ON_LAMBDA = "/opt"
_COMPILE_WITH_PYODIDE = """
const { loadPyodide } = require("pyodide");
(async () => {
  const [directory, version, root] = process.argv.slice(1);
  const pyodide = await loadPyodide();
  pyodide.mountNodeFS("/asset", directory);
  pyodide.globals.set("version", version);
  pyodide.globals.set("root", root);
  pyodide.runPython(`
import compileall, py_compile, sys
found = "%d.%d" % sys.version_info[:2]
if found != version:
    raise RuntimeError(f"Pyodide runs Python {found}, the functions Python {version}: pin the Pyodide of {version}")
unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
if not compileall.compile_dir("/asset", ddir=root, quiet=1, workers=1, invalidation_mode=unchecked):
    raise RuntimeError("a module of the layer does not compile")
`);
})().catch((error) => {
  console.error(String(error));
  process.exit(1);
});
"""


def compile_for_runtime(directory: Path) -> None:
    """Write the bytecode of every module under `directory` (a layer's root: python/...) as the runtime's
    Python compiles it, into each package's __pycache__, with the paths it has on Lambda in tracebacks."""
    done = subprocess.run(
        ["node", "-e", _COMPILE_WITH_PYODIDE, str(directory), RUNTIME_PYTHON, LAYER_ROOT_ON_LAMBDA],
        cwd=topology.PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"compiling the shared layer for Python {RUNTIME_PYTHON} failed (node_modules installed? "
            f"`make synth` installs them):\n{done.stdout.strip()}\n{done.stderr.strip()}".rstrip()
        )


_NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc")


def _fingerprint(directory: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@jsii.implements(ILocalBundling)
class CompiledLayer:
    """Bundles a layer's directory as its sources and their bytecode, on this machine (no Docker).

    The CDK bundles again for every app (each synthesizes into a directory of its own): the compiled
    layer is kept for the process, and compiled again only when a source changed."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self._compiled: dict[str, tempfile.TemporaryDirectory[str]] = {}

    def try_bundle(self, output_dir: str, options: BundlingOptions) -> bool:
        sources = _fingerprint(self.source)
        compiled = self._compiled.get(sources)
        if compiled is None:
            compiled = tempfile.TemporaryDirectory(prefix="compiled-layer-")
            shutil.copytree(self.source, compiled.name, ignore=_NOT_SOURCES, dirs_exist_ok=True)
            compile_for_runtime(Path(compiled.name))
            self._compiled[sources] = compiled
        shutil.copytree(compiled.name, output_dir, dirs_exist_ok=True)
        return True


# One bundler for every stack a process synthesizes.
SHARED_LAYER_BUNDLING = BundlingOptions(
    # Never pulled: the local bundling always runs.
    image=DockerImage.from_registry("local-bundling-only"),
    # jsii calls try_bundle(output_dir, options), whatever its typing says (keyword options).
    local=CompiledLayer(topology.SHARED_LAYER_DIR),  # type: ignore[arg-type]
    output_type=BundlingOutput.NOT_ARCHIVED,
)


@dataclass(frozen=True)
class Shared:
    """What every function is told about and may use, besides its own permissions."""

    deployment: Deployment
    monitoring: Monitoring
    approval_secret: secretsmanager.ISecret
    limits_table: dynamodb.ITable
    event_bus: events.IEventBus


class EngineFunctions(Construct):
    """The layers every function runs with (the shared package, and Powertools), and `add`, which builds
    one function of the topology in the construct it belongs to."""

    def __init__(self, scope: Construct, construct_id: str, *, shared: Shared) -> None:
        super().__init__(scope, construct_id)
        self.shared = shared
        self.layers: list[lambda_.ILayerVersion] = [
            lambda_.LayerVersion(
                self,
                SHARED_LAYER_ID,
                code=lambda_.Code.from_asset(
                    str(topology.SHARED_LAYER_DIR), exclude=ASSET_EXCLUDES, bundling=SHARED_LAYER_BUNDLING
                ),
                compatible_runtimes=[RUNTIME],
                compatible_architectures=[ARCHITECTURE],
                description="cost_engine: models, executors, stores and engine logic",
            ),
            lambda_.LayerVersion.from_layer_version_arn(
                self,
                POWERTOOLS_LAYER_ID,
                ssm.StringParameter.value_for_string_parameter(self, POWERTOOLS_LAYER_PARAMETER),
            ),
        ]
        # Every function built, by its construct ID.
        self.added: dict[str, EngineFunction] = {}

    def add(self, scope: Construct, spec: topology.Function) -> EngineFunction:
        function = EngineFunction(scope, spec, layers=self.layers, shared=self.shared)
        self.added[spec.construct_id] = function
        return function


class EngineFunction(Construct):
    """One function of the topology with a role of its own, so that it holds only its own permissions
    (no AWS managed policies): besides them, its logs, the approval link key, the status events and
    freeing limits, as every function. Its environment is `cost_engine.environment`'s, as locally."""

    def __init__(
        self, scope: Construct, spec: topology.Function, *, layers: list[lambda_.ILayerVersion], shared: Shared
    ) -> None:
        super().__init__(scope, spec.construct_id)
        log_group = shared.monitoring.function_log_group(spec)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Runs {spec.construct_id}",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(LOG_WRITE_ACTIONS), resources=[log_group.log_group_arn])
        )
        # Every function signs or checks approval links with the key (APPROVAL_SECRET_ARN).
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(SECRET_READ_ACTIONS), resources=[shared.approval_secret.secret_arn])
        )
        # Every function may end an execution, and the limits then free its slot and queue entry.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(LIMITS_DELETE_ACTIONS), resources=[shared.limits_table.table_arn])
        )
        # Every function changes execution statuses, and each change is announced on the bus.
        self.role.add_to_policy(
            iam.PolicyStatement(actions=list(EVENT_PUBLISH_ACTIONS), resources=[shared.event_bus.event_bus_arn])
        )
        # The default child: in the tree and the template the function goes by its construct ID.
        self.function = lambda_.Function(
            self,
            "Resource",
            description=spec.description,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=spec.handler,
            code=lambda_.Code.from_asset(str(topology.FUNCTIONS_DIR / spec.code_dir), exclude=ASSET_EXCLUDES),
            layers=layers,
            role=self.role,
            log_group=log_group,
            timeout=Duration.seconds(spec.timeout_seconds),
            memory_size=spec.memory_mb,
            tracing=lambda_.Tracing.ACTIVE,
            environment=function_environment(spec, shared.deployment, role_arn=self.role.role_arn),
        )
