#!/usr/bin/env python3
"""Writes src/kms/model/shapes.json: the input side of AWS KMS's API model (botocore's
service-2.json, 2014-11-01) reduced to what request validation needs — each operation's
input shape, and for every shape reachable from one its type, members (in the model's
order), required members, length/value bounds, enum values, pattern and sensitivity.

Run from the repository root with a Python that has botocore:
    python3 tools/kms_model.py
"""
import json
import sys

import botocore
import botocore.loaders

KEEP = ("type", "min", "max", "enum", "pattern", "sensitive", "required")


def main():
    model = botocore.loaders.Loader().load_service_model("kms", "service-2")
    shapes = model["shapes"]
    ops = {name: op["input"]["shape"] for name, op in model["operations"].items() if "input" in op}
    out, todo = {}, list(ops.values())
    while todo:
        name = todo.pop()
        if name in out:
            continue
        s = shapes[name]
        o = {k: s[k] for k in KEEP if k in s}
        if s["type"] == "structure":
            o["members"] = [[m, v["shape"]] for m, v in s["members"].items()]
            todo += [v["shape"] for v in s["members"].values()]
        elif s["type"] == "list":
            o["member"] = s["member"]["shape"]
            todo.append(o["member"])
        elif s["type"] == "map":
            o["key"], o["value"] = s["key"]["shape"], s["value"]["shape"]
            todo += [o["key"], o["value"]]
        out[name] = o
    doc = {
        "source": f"botocore {botocore.__version__} kms 2014-11-01",
        "operations": dict(sorted(ops.items())),
        "shapes": dict(sorted(out.items())),
    }
    with open("src/kms/model/shapes.json", "w") as f:
        json.dump(doc, f, indent=0, sort_keys=False)
        f.write("\n")
    print(f"{len(ops)} operations, {len(out)} shapes", file=sys.stderr)


if __name__ == "__main__":
    main()
