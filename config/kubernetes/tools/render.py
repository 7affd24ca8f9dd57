#!/usr/bin/env python3
"""Render a kustomization without kubectl: the fallback of config/kubernetes/tools/validate.

Handles the subset these manifests use, and refuses anything else (so a new feature in a
kustomization.yaml cannot be silently skipped): `resources` (files and directories with their
own kustomization.yaml), `namespace` (set on namespaced objects), `images` (`newTag`,
`newName`, `digest`) and `patches` (JSON 6902 files with a kind/name target).

    render.py DIR > rendered.yaml

When kubectl is there, validate renders each overlay both ways and requires the same objects,
so this fallback is checked against the real thing.
"""
import os
import sys

import jsonpatch
import yaml

KNOWN = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "CustomResourceDefinition", "PriorityClass",
}


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(directory):
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    unknown = set(k) - KNOWN
    if unknown:
        sys.exit(f"render.py: {directory}: unsupported kustomization fields {sorted(unknown)}")
    objects = []
    for resource in k.get("resources", []):
        path = os.path.normpath(os.path.join(directory, resource))
        objects += render(path) if os.path.isdir(path) else load_all(path)
    for patch in k.get("patches", []):
        if set(patch) - {"path", "target"} or set(patch["target"]) - {"kind", "name"}:
            sys.exit(f"render.py: {directory}: only JSON 6902 patch files with a kind/name target")
        with open(os.path.join(directory, patch["path"])) as f:
            ops = jsonpatch.JsonPatch(yaml.safe_load(f))
        target = patch["target"]
        hits = [o for o in objects
                if o["kind"] == target["kind"] and o["metadata"]["name"] == target["name"]]
        if len(hits) != 1:
            sys.exit(f"render.py: {directory}: patch target {target} matches {len(hits)} objects")
        ops.apply(hits[0], in_place=True)
    if "namespace" in k:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
        for o in objects:
            for subject in o.get("subjects", []) if o["kind"].endswith("Binding") else []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = k["namespace"]
    for image in k.get("images", []):
        for o in objects:
            spec = o.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                name, _, _ = c["image"].partition(":")
                if name == image["name"]:
                    new = image.get("newName", name)
                    if "digest" in image:
                        c["image"] = f"{new}@{image['digest']}"
                    else:
                        c["image"] = f"{new}:{image.get('newTag', c['image'].partition(':')[2])}"
    return objects


if __name__ == "__main__":
    yaml.safe_dump_all(render(sys.argv[1]), sys.stdout, sort_keys=True)
