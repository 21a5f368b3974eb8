"""Regenerate tests/data/kuberay_raycluster_v1.schema.yaml from KubeRay's RayCluster CRD.

    git clone https://github.com/ray-project/kuberay && git -C kuberay rev-parse HEAD
    python tests/data/trim_kuberay_crd.py kuberay/ray-operator/config/crd/bases/ray.io_rayclusters.yaml <commit>

The CRD is ~900 KB; the copy keeps the ray.io/v1 openAPIV3Schema cut down to what cluster/kuberay.yaml
uses: descriptions dropped, and under every `properties` only the keys the manifest sets (plus the
`required` ones, as bare type stubs). The pod template schema, the same for the head and every worker
group in the CRD, is kept once under $defs and referenced from both places. Nothing else is changed,
so whatever the copy still holds (types, required lists, enums, int-or-string) is the CRD's own.
Re-run it after adding a field to cluster/kuberay.yaml (tests/test_search_cluster.py rejects fields
that the copy does not know, as `kubectl apply`'s strict field validation rejects unknown fields).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("kuberay_raycluster_v1.schema.yaml")
SOURCE = "ray-operator/config/crd/bases/ray.io_rayclusters.yaml"
TEMPLATE_REF = {"$ref": "#/$defs/PodTemplateSpec"}


def _strip(node):
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _prune(schema: dict, instances: list) -> dict:
    """`schema` with, under each `properties`, only the keys some instance sets (or `required` lists)."""
    if schema == TEMPLATE_REF:
        return schema
    out = dict(schema)
    if "properties" in schema:
        dicts = [i for i in instances if isinstance(i, dict)]
        kept = {}
        for key, sub in schema["properties"].items():
            values = [d[key] for d in dicts if key in d]
            if values:
                kept[key] = _prune(sub, values)
            elif key in schema.get("required", []):
                kept[key] = {k: v for k, v in sub.items() if k == "type"}
        out["properties"] = kept
    if isinstance(schema.get("items"), dict):
        out["items"] = _prune(schema["items"], [x for i in instances if isinstance(i, list) for x in i])
    if isinstance(schema.get("additionalProperties"), dict):
        values = [v for i in instances if isinstance(i, dict) for v in i.values()]
        out["additionalProperties"] = _prune(schema["additionalProperties"], values)
    return out


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):  # write the shared $ref out twice, not as a YAML anchor
        return True


def main(crd_path: str, commit: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strip(version["schema"]["openAPIV3Schema"])
    schema["properties"].pop("status", None)  # set by the operator, never in a manifest
    spec = schema["properties"]["spec"]["properties"]
    head_template = spec["headGroupSpec"]["properties"]["template"]
    worker_template = spec["workerGroupSpecs"]["items"]["properties"]["template"]
    assert head_template == worker_template, "the CRD's head and worker pod templates differ now"
    spec["headGroupSpec"]["properties"]["template"] = TEMPLATE_REF
    spec["workerGroupSpecs"]["items"]["properties"]["template"] = TEMPLATE_REF

    (manifest,) = [d for d in yaml.safe_load_all((ROOT / "cluster" / "kuberay.yaml").read_text())
                   if d and d.get("kind") == "RayCluster"]
    templates = [manifest["spec"]["headGroupSpec"]["template"]]
    templates += [g["template"] for g in manifest["spec"].get("workerGroupSpecs", [])]
    trimmed = _prune(schema, [manifest])
    trimmed["$defs"] = {"PodTemplateSpec": _prune(head_template, templates)}

    header = (
        "# The RayCluster (ray.io/v1) openAPIV3Schema of KubeRay's CRD, trimmed to what cluster/kuberay.yaml\n"
        "# uses (descriptions dropped; only the properties the manifest sets, plus required ones as stubs;\n"
        "# the pod template kept once under $defs). Made by tests/data/trim_kuberay_crd.py from\n"
        f"#   repository: github.com/ray-project/kuberay\n"
        f"#   path:       {SOURCE}\n"
        f"#   commit:     {commit}\n"
    )
    OUT.write_text(header + yaml.dump(trimmed, Dumper=_NoAliasDumper, sort_keys=False, width=100))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
