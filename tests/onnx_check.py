"""Checks ONNX files written by nibble (tests/test_onnx.c), with the onnx
package of /usr/bin/python3 (Debian's python3-onnx):

    python3 tests/onnx_check.py MODEL.onnx

onnx.checker.check_model(full_check=True): the model's structure, every
node against its operator schema at the model's opset, and strict shape
inference through the whole graph. Then prints, one per line, what the
C test compares: "ir_version N", "opset N", "input NAME DIMS", "output NAME
DIMS" (inferred, N symbolic), "op TYPE COUNT" per operator type and "meta
KEY=VALUE" per metadata entry. Exit status 1 (with the checker's message)
when the model is invalid."""
import sys

import onnx


def dims(v):
    return "x".join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim)


def main(path):
    m = onnx.load(path)
    try:
        onnx.checker.check_model(m, full_check=True)
    except Exception as e:  # the checker's ValidationError and shape-inference errors
        print(f"{path}: {type(e).__name__}: {e}")
        return 1
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    print(f"ir_version {m.ir_version}")
    print(f"opset {m.opset_import[0].version}")
    for v in m.graph.input:
        print(f"input {v.name} {dims(v)}")
    for v in inferred.graph.output:
        print(f"output {v.name} {dims(v)}")
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    for k in sorted(ops):
        print(f"op {k} {ops[k]}")
    for p in m.metadata_props:
        print(f"meta {p.key}={p.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
