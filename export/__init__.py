"""Training-box writers that translate a policy IR into ONNX, TFLite and a C header, as a verified bundle.

Reading and verifying bundles is the device's side and lives in `edge_rl.bundle` and
`edge_rl.runtime`; this package only writes.
"""

from edge_rl.errors import BadInput


class ExportError(BadInput):
    """The policy cannot be written in the asked format."""
