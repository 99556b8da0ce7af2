#!/usr/bin/env python3
"""Generates crates/berth-apiserver/src/protobuf/table.rs, the schema that
crates/berth-apiserver/src/protobuf.rs walks to turn Kubernetes protobuf bodies into JSON.

Inputs are the upstream Go API sources of the Kubernetes version berth serves, at one tag:

  * k8s.io/api           (github.com/kubernetes/api,          tag v0.33.x)
  * k8s.io/apimachinery  (github.com/kubernetes/apimachinery, same tag)

Two files of each Go package are read, and each answers a different question:

  * generated.proto (written by go-to-protobuf) gives the wire layout: field numbers, scalar
    types, repeated/map, and which message a field holds.
  * the Go structs (types.go and friends) give the JSON side of each field, from the struct tag
    that carries the same protobuf field number: the JSON name, `,inline`, `,omitempty`, and
    whether the Go field is a pointer. The last two decide whether a zero scalar that is present
    on the wire reaches the JSON: Go's protobuf marshaller writes every non-pointer scalar, zero
    or not, while encoding/json drops zero `omitempty` ones; a zero behind a pointer is a real
    value (`replicas: 0`) and is kept.

Only the messages reachable from ROOTS below are emitted. The run fails loudly on anything it
cannot map (a proto field without a Go field, a Go type in the closure with its own MarshalJSON
that the decoder has no special case for, a special type whose wire layout changed), so a
regeneration for a new Kubernetes version either works or says what to look at.

Usage (from the repository root; any checkout or `go mod download` directory of the two
modules works, e.g. `git -C api checkout v0.33.13`):

    python3 crates/berth-apiserver/tools/gen_protobuf_table.py \
        --api /path/to/k8s.io/api --apimachinery /path/to/k8s.io/apimachinery \
        --version v0.33.13 > crates/berth-apiserver/src/protobuf/table.rs
"""

import argparse
import os
import re
import sys
from collections import OrderedDict

# (apiVersion, kind, proto message) of every kind a typed client may send to berth.
ROOTS = [
    ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
    ("v1", "Node", "k8s.io.api.core.v1.Node"),
    ("v1", "Pod", "k8s.io.api.core.v1.Pod"),
    ("v1", "Service", "k8s.io.api.core.v1.Service"),
    ("v1", "Endpoints", "k8s.io.api.core.v1.Endpoints"),
    ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
    ("v1", "Secret", "k8s.io.api.core.v1.Secret"),
    ("v1", "Event", "k8s.io.api.core.v1.Event"),
    ("v1", "ServiceAccount", "k8s.io.api.core.v1.ServiceAccount"),
    ("v1", "PersistentVolume", "k8s.io.api.core.v1.PersistentVolume"),
    ("v1", "PersistentVolumeClaim", "k8s.io.api.core.v1.PersistentVolumeClaim"),
    ("v1", "Binding", "k8s.io.api.core.v1.Binding"),
    ("storage.k8s.io/v1", "StorageClass", "k8s.io.api.storage.v1.StorageClass"),
    ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
    ("apps/v1", "ReplicaSet", "k8s.io.api.apps.v1.ReplicaSet"),
    ("apps/v1", "StatefulSet", "k8s.io.api.apps.v1.StatefulSet"),
    ("apps/v1", "ControllerRevision", "k8s.io.api.apps.v1.ControllerRevision"),
    ("discovery.k8s.io/v1", "EndpointSlice", "k8s.io.api.discovery.v1.EndpointSlice"),
    ("coordination.k8s.io/v1", "Lease", "k8s.io.api.coordination.v1.Lease"),
    ("events.k8s.io/v1", "Event", "k8s.io.api.events.v1.Event"),
    ("autoscaling/v1", "Scale", "k8s.io.api.autoscaling.v1.Scale"),
    ("meta.k8s.io/v1", "DeleteOptions", "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions"),
]

# Proto packages read, and where each lives (module flag, directory inside the module).
PACKAGES = {
    "k8s.io.api.core.v1": ("api", "core/v1"),
    "k8s.io.api.apps.v1": ("api", "apps/v1"),
    "k8s.io.api.storage.v1": ("api", "storage/v1"),
    "k8s.io.api.discovery.v1": ("api", "discovery/v1"),
    "k8s.io.api.coordination.v1": ("api", "coordination/v1"),
    "k8s.io.api.events.v1": ("api", "events/v1"),
    "k8s.io.api.autoscaling.v1": ("api", "autoscaling/v1"),
    "k8s.io.apimachinery.pkg.apis.meta.v1": ("apimachinery", "pkg/apis/meta/v1"),
    "k8s.io.apimachinery.pkg.runtime": ("apimachinery", "pkg/runtime"),
    "k8s.io.apimachinery.pkg.runtime.schema": ("apimachinery", "pkg/runtime/schema"),
    "k8s.io.apimachinery.pkg.util.intstr": ("apimachinery", "pkg/util/intstr"),
    "k8s.io.apimachinery.pkg.api.resource": ("apimachinery", "pkg/api/resource"),
}

# Messages whose JSON form is not an object of their proto fields: each has a Go MarshalJSON,
# and protobuf.rs decodes each by hand. The wire layout the hand decoder relies on is checked
# against the .proto below, as (number, proto type) per field.
SPECIAL = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": ("Time", [(1, "int64"), (2, "int32")]),
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": ("MicroTime", [(1, "int64"), (2, "int32")]),
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": ("FieldsV1", [(1, "bytes")]),
    "k8s.io.apimachinery.pkg.runtime.RawExtension": ("RawExtension", [(1, "bytes")]),
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": (
        "IntOrString",
        [(1, "int64"), (2, "int32"), (3, "string")],
    ),
    "k8s.io.apimachinery.pkg.api.resource.Quantity": ("Quantity", [(1, "string")]),
}

# The proto scalar types these kinds use, and the decoder's name for each. Another type showing
# up after a version bump fails the run here (resolve) instead of compiling into a gap.
SCALARS = {
    "string": "Str",
    "bytes": "Bytes",
    "bool": "Bool",
    "int32": "I32",
    "int64": "I64",
}

PROTO_SCALARS = {
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64",
    "fixed32", "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
}

# Rust static-name prefix per package, so the table reads like the API groups.
PREFIX = {
    "k8s.io.api.core.v1": "CORE_V1",
    "k8s.io.api.apps.v1": "APPS_V1",
    "k8s.io.api.storage.v1": "STORAGE_V1",
    "k8s.io.api.discovery.v1": "DISCOVERY_V1",
    "k8s.io.api.coordination.v1": "COORDINATION_V1",
    "k8s.io.api.events.v1": "EVENTS_V1",
    "k8s.io.api.autoscaling.v1": "AUTOSCALING_V1",
    "k8s.io.apimachinery.pkg.apis.meta.v1": "META_V1",
    "k8s.io.apimachinery.pkg.runtime": "RUNTIME",
    "k8s.io.apimachinery.pkg.runtime.schema": "SCHEMA",
    "k8s.io.apimachinery.pkg.util.intstr": "INTSTR",
    "k8s.io.apimachinery.pkg.api.resource": "RESOURCE",
}


def fail(msg):
    sys.exit(f"gen_protobuf_table: {msg}")


# ---------------------------------------------------------------------------------------------
# generated.proto


def strip_proto_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


FIELD_RE = re.compile(
    r"^(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)\s*(\[[^\]]*\])?\s*;$"
)
MAP_RE = re.compile(r"^map\s*<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s+(\w+)\s*=\s*(\d+)\s*;$")


def parse_proto(path):
    """Returns (package, {message name: [field dict]}) of one generated.proto."""
    text = strip_proto_comments(open(path, encoding="utf-8").read())
    pkg = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M)
    if not pkg:
        fail(f"{path}: no package")
    messages = OrderedDict()
    for m in re.finditer(r"\bmessage\s+(\w+)\s*\{", text):
        name = m.group(1)
        body_start = m.end()
        depth, i = 1, body_start
        while depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        body = text[body_start : i - 1]
        if "{" in body:
            fail(f"{path}: message {name} has nested declarations, which this script does not read")
        fields = []
        for stmt in body.split(";"):
            stmt = " ".join(stmt.split())
            if not stmt:
                continue
            stmt += ";"
            fm = FIELD_RE.match(stmt)
            mm = MAP_RE.match(stmt)
            if fm:
                label, typ, fname, num, _options = fm.groups()
                # Options ([packed=true]) need no reading: the decoder takes packed and
                # unpacked repeated scalars alike.
                fields.append({"label": label, "type": typ, "name": fname, "number": int(num)})
            elif mm:
                key, val, fname, num = mm.groups()
                fields.append(
                    {"label": "map", "key": key, "type": val, "name": fname, "number": int(num)}
                )
            elif stmt.startswith("option ") or stmt.startswith("reserved "):
                continue
            else:
                fail(f"{path}: message {name}: cannot read {stmt!r}")
        messages[name] = fields
    return pkg.group(1), messages


def resolve(type_name, pkg, all_messages):
    """Resolves a proto type reference the way protoc does for these files."""
    if type_name in SCALARS:
        return type_name
    if type_name in PROTO_SCALARS:
        fail(f"proto type {type_name} (in {pkg}) has no decoder in protobuf.rs yet")
    if type_name.startswith("."):
        full = type_name[1:]
        if full in all_messages:
            return full
        fail(f"unknown type {type_name} (from {pkg})")
    scope = pkg.split(".")
    while True:
        cand = ".".join(scope + [type_name])
        if cand in all_messages:
            return cand
        if not scope:
            break
        scope.pop()
    fail(f"unknown type {type_name} (from {pkg})")


# ---------------------------------------------------------------------------------------------
# Go structs


TAG_RE = re.compile(r'(\w+):"([^"]*)"')


def strip_go_comments(text):
    # Struct tags never contain "//" in these packages; block comments do not appear in
    # struct bodies. Strings elsewhere in the file are irrelevant because only struct bodies
    # are read afterwards.
    return re.sub(r"//[^\n]*", "", text)


def parse_go_package(directory):
    """Returns {struct name: {proto number: go field dict}, ...} and the set of type names
    that have their own MarshalJSON."""
    structs = {}
    marshalers = set()
    for fname in sorted(os.listdir(directory)):
        if not fname.endswith(".go") or fname.endswith("_test.go"):
            continue
        text = open(os.path.join(directory, fname), encoding="utf-8").read()
        for m in re.finditer(r"^func \(\w*\s*\*?(\w+)\) MarshalJSON\(\)", text, re.M):
            marshalers.add(m.group(1))
        text = strip_go_comments(text)
        for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", text, re.M | re.S):
            name, body = m.group(1), m.group(2)
            fields = {}
            for line in body.split("\n"):
                line = line.strip()
                if not line or "`" not in line:
                    continue
                lm = re.match(r"^(.*?)\s*`(.*)`$", line)
                if not lm:
                    fail(f"{directory}/{fname}: struct {name}: cannot read {line!r}")
                decl, tag = lm.group(1).split(), dict(TAG_RE.findall(lm.group(2)))
                if len(decl) == 1:
                    go_name, go_type = decl[0].lstrip("*").split(".")[-1], decl[0]
                elif len(decl) == 2:
                    go_name, go_type = decl
                else:
                    fail(f"{directory}/{fname}: struct {name}: cannot read {line!r}")
                pb = tag.get("protobuf")
                if pb is None or pb == "-":
                    continue
                parts = pb.split(",")
                number = int(parts[1])
                pb_name = next((p[5:] for p in parts if p.startswith("name=")), None)
                # Types with their own MarshalJSON (IntOrString, Duration) carry no json tags;
                # a missing one only matters if the field is used, which main() checks.
                js_parts = tag.get("json", "-").split(",")
                fields[number] = {
                    "go_name": go_name,
                    "pointer": go_type.startswith("*"),
                    "json": js_parts[0],
                    "omitempty": "omitempty" in js_parts[1:],
                    "inline": "inline" in js_parts[1:],
                    "pb_name": pb_name,
                }
            if name in structs:
                fail(f"{directory}: struct {name} declared twice")
            structs[name] = fields
    return structs, marshalers


# ---------------------------------------------------------------------------------------------
# Closure and output


def static_name(full):
    pkg, _, name = full.rpartition(".")
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).upper()
    return f"{PREFIX[pkg]}_{snake}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--api", required=True, help="k8s.io/api source directory")
    ap.add_argument("--apimachinery", required=True, help="k8s.io/apimachinery source directory")
    ap.add_argument("--version", required=True, help="the tag both directories are at, for the header")
    args = ap.parse_args()
    roots_dir = {"api": args.api, "apimachinery": args.apimachinery}

    all_messages = {}  # full name -> (package, fields)
    go = {}  # package -> (structs, marshalers)
    for pkg, (module, sub) in PACKAGES.items():
        directory = os.path.join(roots_dir[module], sub)
        proto_pkg, messages = parse_proto(os.path.join(directory, "generated.proto"))
        if proto_pkg != pkg:
            fail(f"{directory}/generated.proto declares package {proto_pkg}, expected {pkg}")
        for name, fields in messages.items():
            all_messages[f"{pkg}.{name}"] = (pkg, fields)
        go[pkg] = parse_go_package(directory)

    # Breadth-first closure from the roots, in a stable order.
    order, seen = [], set()
    queue = [root for _, _, root in ROOTS]
    while queue:
        full = queue.pop(0)
        if full in seen:
            continue
        if full not in all_messages:
            fail(f"root or referenced message {full} not found")
        seen.add(full)
        order.append(full)
        if full in SPECIAL:
            continue
        pkg, fields = all_messages[full]
        for f in fields:
            t = resolve(f["type"], pkg, all_messages)
            if t not in SCALARS:
                queue.append(t)

    out = []
    emit = out.append
    emit(f"// @generated by crates/berth-apiserver/tools/gen_protobuf_table.py from k8s.io/api and")
    emit(f"// k8s.io/apimachinery {args.version}: do not edit; rerun the script (see its docstring).")
    emit("//")
    emit("// One static per protobuf message reachable from the kinds in KINDS. A field row is")
    emit("// f(proto number, JSON name, type, cardinality, zero): `Inline` merges the message's")
    emit("// fields into the parent object (Go `json:\",inline\"`); `OMIT` drops a zero scalar that")
    emit("// a Go client wrote for a non-pointer `omitempty` field, `KEEP` keeps it.")
    emit("")
    emit("use super::schema::{Card::*, KEEP, Message, OMIT, Special, Ty::*, f};")
    emit("")
    emit("/// (apiVersion, kind, message) of every kind that may arrive as protobuf.")
    emit("pub(super) static KINDS: &[(&str, &str, &Message)] = &[")
    for api_version, kind, root in ROOTS:
        emit(f'    ("{api_version}", "{kind}", &{static_name(root)}),')
    emit("];")

    names = {}
    stats = {"messages": 0, "fields": 0}
    for full in order:
        sname = static_name(full)
        if sname in names:
            fail(f"static name {sname} used by {names[sname]} and {full}")
        names[sname] = full
        pkg, fields = all_messages[full]
        short = full.rpartition(".")[2]
        structs, marshalers = go[pkg]
        emit("")
        stats["messages"] += 1
        if full in SPECIAL:
            special, layout = SPECIAL[full]
            got = [(f["number"], f["type"]) for f in fields if f["label"] == "optional"]
            if got != layout or len(got) != len(fields):
                fail(f"{full}: wire layout {got} differs from the one protobuf.rs decodes, {layout}")
            emit(f'pub(super) static {sname}: Message = Message {{ name: "{full}", special: Special::{special}, fields: &[] }};')
            continue
        if short in marshalers:
            fail(f"{full}: the Go type has its own MarshalJSON; protobuf.rs needs a special case for it")
        if short not in structs:
            fail(f"{full}: no Go struct {short} in {PACKAGES[pkg][1]}")
        go_fields = structs[short]
        emit(f'pub(super) static {sname}: Message = Message {{ name: "{full}", special: Special::None, fields: &[')
        numbers = set()
        for fd in sorted(fields, key=lambda x: x["number"]):
            num = fd["number"]
            if num in numbers:
                fail(f"{full}: field number {num} used twice")
            numbers.add(num)
            gf = go_fields.get(num)
            if gf is None:
                fail(f"{full}.{fd['name']} = {num}: no Go field of {short} has that protobuf number")
            # An unnamed tag (`protobuf:"bytes,1,req"`, EphemeralContainerCommon) is fine.
            if gf["pb_name"] is not None and gf["pb_name"] != fd["name"]:
                fail(f"{full}.{fd['name']}: Go tag says name={gf['pb_name']}")
            t = resolve(fd["type"], pkg, all_messages)
            ty = SCALARS[t] if t in SCALARS else f"Msg(&{static_name(t)})"
            if fd["label"] == "map":
                if fd["key"] != "string":
                    fail(f"{full}.{fd['name']}: map key {fd['key']} is not string")
                card = "Map"
            elif fd["label"] == "repeated":
                card = "Many"
            elif fd["label"] == "optional":
                card = "One"
            else:
                fail(f"{full}.{fd['name']}: label {fd['label']}")
            json_name = gf["json"]
            if gf["inline"]:
                if json_name or card != "One" or t in SCALARS or t in SPECIAL:
                    fail(f"{full}.{fd['name']}: inline field that is not a plain singular message")
                card = "Inline"
                json_name = ""
            elif not json_name or json_name == "-":
                fail(f"{full}.{fd['name']}: Go json tag {gf['json']!r} names no JSON field")
            # Whether a zero on the wire reaches the JSON: see the module docstring.
            # Only a singular scalar can be a dropped zero; every other row keeps what it reads.
            omit = card == "One" and t in SCALARS and not gf["pointer"] and gf["omitempty"]
            zero = "OMIT" if omit else "KEEP"
            emit(f'    f({num}, "{json_name}", {ty}, {card}, {zero}),')
            stats["fields"] += 1
        emit("] };")

    sys.stdout.write("\n".join(out) + "\n")
    sys.stderr.write(f"gen_protobuf_table: {stats['messages']} messages, {stats['fields']} fields\n")


if __name__ == "__main__":
    main()
