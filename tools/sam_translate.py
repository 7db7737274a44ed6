"""Translate template.yaml with SAM's own translator (no AWS account) and print
the CloudFormation it deploys, as JSON: `python tools/sam_translate.py
template.yaml Name=Value ...`. tests/tests/template.rs reads what SAM makes of
the API definitions (conditions, resource policy, payload version)."""
import json
import sys

from samtranslator.translator.transform import transform
from samtranslator.yaml_helper import yaml_parse


class NoManagedPolicies:
    def load(self):
        return {}


def main():
    template = yaml_parse(open(sys.argv[1]).read())
    # The code is built by `sam build`; any S3 location translates the same.
    template.setdefault("Globals", {}).setdefault("Function", {})["CodeUri"] = "s3://bucket/key"
    params = dict(arg.split("=", 1) for arg in sys.argv[2:])
    print(json.dumps(transform(template, params, NoManagedPolicies())))


main()
