"""Validates every custom resource in the example manifests against the schema of its CRD in
control/deploy/crds.yaml (the CRD is generated from the Rust type; this checks that the examples
users copy match it). Exits non-zero, naming the object and the field, on the first mismatch."""

import sys
import glob

import jsonschema
import yaml

crds = {}
for doc in yaml.safe_load_all(open("control/deploy/crds.yaml")):
    if not doc or doc.get("kind") != "CustomResourceDefinition":
        continue
    spec = doc["spec"]
    for version in spec["versions"]:
        key = (f'{spec["group"]}/{version["name"]}', spec["names"]["kind"])
        crds[key] = version["schema"]["openAPIV3Schema"]

checked = 0
for path in sorted(glob.glob("control/deploy/examples/*.yaml")):
    for doc in yaml.safe_load_all(open(path)):
        if not doc:
            continue
        key = (doc.get("apiVersion"), doc.get("kind"))
        schema = crds.get(key)
        if schema is None:
            continue
        try:
            jsonschema.validate(doc, schema)
        except jsonschema.ValidationError as error:
            where = ".".join(str(p) for p in error.absolute_path)
            print(f"{path}: {key[1]} {doc['metadata']['name']}: {where}: {error.message}")
            sys.exit(1)
        checked += 1

if checked == 0:
    print("no custom resource found in the examples to check")
    sys.exit(1)
print(f"{checked} custom resource(s) in the examples match their CRD schemas")
