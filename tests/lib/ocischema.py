"""Validate JSON documents against the OCI image-spec schemas (draft 4).

Used by the unit and end-to-end tests.  Works with the jsonschema that
Debian 12 ships (4.10, RefResolver) and with newer ones (referencing).

    python3 ocischema.py SCHEMA_DIR SCHEMA_FILE DOCUMENT_FILE
exits 0 when the document validates, 1 (errors on stderr) when not.
As a module: validator(schema_dir, schema_file) -> a Draft4Validator.
"""
import json
import os
import sys

from jsonschema import Draft4Validator


def _load(path):
    with open(path) as f:
        return json.load(f)


def _by_name(schema_dir, uri):
    # the schemas refer to each other by URL; the last path element is the file
    return _load(os.path.join(schema_dir, uri.split('#')[0].rstrip('/').rsplit('/', 1)[-1]))


def validator(schema_dir, schema_file):
    schema = _load(os.path.join(schema_dir, schema_file))
    try:
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4
    except ImportError:
        from jsonschema import RefResolver
        fetch = lambda uri: _by_name(schema_dir, uri)
        resolver = RefResolver(schema.get('id', ''), schema, handlers={'http': fetch, 'https': fetch})
        return Draft4Validator(schema, resolver=resolver)
    reg = Registry(retrieve=lambda uri: Resource.from_contents(
        _by_name(schema_dir, uri), default_specification=DRAFT4))
    return Draft4Validator(schema, registry=reg)


def errors(schema_dir, schema_file, doc):
    return [e.message for e in validator(schema_dir, schema_file).iter_errors(doc)]


if __name__ == '__main__':
    errs = errors(sys.argv[1], sys.argv[2], _load(sys.argv[3]))
    for e in errs:
        print('schema error:', sys.argv[2], e, file=sys.stderr)
    sys.exit(1 if errs else 0)
