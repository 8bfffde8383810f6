#!/usr/bin/env python3
"""Vendors the part of Twilio's published OpenAPI definitions that the conformance
checks need: for every path and method, the parameters (where they go, their type, for
arrays the item type, enums) and the form fields of the request body. Writes
tests/twilio-oai/<api>.json next to Twilio's MIT licence.

Usage: scripts/vendor-twilio-oai.py DIR_WITH_twilio_*_v1.json
(the definitions come from https://github.com/twilio/twilio-oai, spec/json/)."""
import json, os, shutil, sys

APIS = ["twilio_taskrouter_v1", "twilio_sync_v1", "twilio_conversations_v1", "twilio_events_v1"]
METHODS = ["get", "post", "delete", "put", "patch"]


def resolve(doc, schema):
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 10:
        name = schema["$ref"].split("/")[-1]
        schema = doc["components"]["schemas"][name]
        seen += 1
    return schema or {}


def describe(doc, schema):
    s = resolve(doc, schema)
    out = {"type": s.get("type", "string")}
    if "enum" in s:
        out["enum"] = s["enum"]
    if s.get("type") == "array":
        items = resolve(doc, s.get("items", {}))
        out["items"] = {"type": items.get("type", "string")}
        if "enum" in items:
            out["items"]["enum"] = items["enum"]
    return out


def main(src):
    here = os.path.dirname(os.path.abspath(__file__))
    dest = os.path.join(here, "..", "tests", "twilio-oai")
    os.makedirs(dest, exist_ok=True)
    for api in APIS:
        doc = json.load(open(os.path.join(src, api + ".json")))
        paths = {}
        for path, item in sorted(doc["paths"].items()):
            ops = {}
            for m in METHODS:
                op = item.get(m)
                if not op:
                    continue
                params = {}
                for p in op.get("parameters", []):
                    d = describe(doc, p.get("schema", {}))
                    d["in"] = p["in"]
                    params[p["name"]] = d
                form = {}
                body = op.get("requestBody", {}).get("content", {})
                fs = body.get("application/x-www-form-urlencoded", {}).get("schema")
                if fs:
                    fs = resolve(doc, fs)
                    for name, prop in fs.get("properties", {}).items():
                        form[name] = describe(doc, prop)
                ops[m.upper()] = {"operationId": op.get("operationId"), "params": params, "form": form}
            paths[path] = ops
        out = {"source": "twilio-oai spec/json/%s.json (version %s)" % (api, doc.get("info", {}).get("version")),
               "paths": paths}
        with open(os.path.join(dest, api + ".json"), "w") as f:
            json.dump(out, f, indent=0, sort_keys=True)
            f.write("\n")
    shutil.copy(os.path.join(src, "LICENSE"), os.path.join(dest, "LICENSE"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/twilio-oai")
