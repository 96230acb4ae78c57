"""Bundles: the signed, hash-checked directory that carries a policy from the training box to a device.

`open_bundle` is what a device runs before it trusts anything (`container`); the manifest schema,
read and written here in one place, is in `manifest`. Writing the model files themselves
(ONNX, TFLite, C) is the training box's job, in the `export` package.
"""

from edge_rl.bundle.container import (
    CHECKSUM,
    CONTENT_FILES,
    FORMAT_FILES,
    IR_FILES,
    MANIFEST,
    SIGNATURE,
    Bundle,
    open_bundle,
    sha256,
    write_bundle,
)
from edge_rl.bundle.manifest import FORMAT, MIN_GOLDEN, SCHEMA_VERSION, Golden, describe, precision
from edge_rl.bundle.manifest import build as build_manifest

__all__ = [
    "CHECKSUM",
    "CONTENT_FILES",
    "FORMAT",
    "FORMAT_FILES",
    "IR_FILES",
    "MANIFEST",
    "MIN_GOLDEN",
    "SCHEMA_VERSION",
    "SIGNATURE",
    "Bundle",
    "Golden",
    "build_manifest",
    "describe",
    "open_bundle",
    "precision",
    "sha256",
    "write_bundle",
]
