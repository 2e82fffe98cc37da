"""The shared layer ships its modules compiled for the functions' Python: on Lambda, where /opt is
read-only, a cold start loads the engine's modules without compiling them first."""

from __future__ import annotations

from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_lambda as lambda_

from cost_engine import topology
from infra.constructs.functions import RUNTIME, SHARED_LAYER_ID
from infra.stack import CostExecutionEngineStack

# "python3.14" runs the bytecode of __pycache__/<module>.cpython-314.pyc.
CACHE_TAG = "cpython-" + RUNTIME.name.removeprefix("python").replace(".", "")
# CPython 3.14's bytecode version (importlib.util.MAGIC_NUMBER), the same for every 3.14 release.
PYTHON_3_14_MAGIC = (3627).to_bytes(2, "little") + b"\r\n"
# The flags of a .pyc header (PEP 552): bit 0, hash-based; bit 1, check the source. Hash-based and not
# checked: the runtime loads it without reading the source.
UNCHECKED_HASH = 0b01
SOURCES = topology.SHARED_LAYER_DIR / "python"


@pytest.fixture(scope="module")
def layer_asset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory the synthesized stack uploads as the shared layer."""
    app = App(outdir=str(tmp_path_factory.mktemp("cdk.out")))
    stack = CostExecutionEngineStack(app, "LayerBytecode")
    assembly = app.synth()
    layer = stack.engine_functions.node.find_child(SHARED_LAYER_ID)
    cfn_layer = layer.node.default_child
    assert isinstance(cfn_layer, lambda_.CfnLayerVersion)
    logical_id = Stack.of(layer).resolve(cfn_layer.logical_id)
    template = assembly.get_stack_by_name(stack.stack_name).template
    s3_key: str = template["Resources"][logical_id]["Properties"]["Content"]["S3Key"]
    return Path(assembly.directory) / f"asset.{s3_key.removesuffix('.zip')}"


def modules() -> list[Path]:
    """Every module of the layer, relative to its python/ directory."""
    return sorted(p.relative_to(SOURCES) for p in SOURCES.rglob("*.py") if "__pycache__" not in p.parts)


def compiled(asset: Path, module: Path) -> Path:
    return asset / "python" / module.parent / "__pycache__" / f"{module.stem}.{CACHE_TAG}.pyc"


def test_every_module_of_the_layer_ships_with_its_source_and_its_bytecode_for_the_runtime(layer_asset: Path) -> None:
    assert modules()
    missing = [str(m) for m in modules() if not compiled(layer_asset, m).is_file()]
    assert missing == []
    assert all((layer_asset / "python" / m).is_file() for m in modules())
    # Nothing compiled for another Python (this machine's caches) is shipped.
    assert {p.name.split(".")[-2] for p in layer_asset.rglob("*.pyc")} == {CACHE_TAG}


def test_the_bytecode_is_the_runtimes_and_is_loaded_without_reading_the_sources(layer_asset: Path) -> None:
    for module in modules():
        header = compiled(layer_asset, module).read_bytes()[:8]
        assert header[:4] == PYTHON_3_14_MAGIC, module
        assert int.from_bytes(header[4:8], "little") == UNCHECKED_HASH, module


def test_the_bytecode_names_each_module_where_lambda_puts_it(layer_asset: Path) -> None:
    # Tracebacks show /opt/python/cost_engine/..., where Lambda unpacks the layer.
    for module in modules():
        assert f"/opt/python/{module}".encode() in compiled(layer_asset, module).read_bytes(), module
