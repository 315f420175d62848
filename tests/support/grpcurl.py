"""grpcurl without grpcurl: reflection + JSON, as a developer would call the mesh.

`grpcurl(address, method, body, headers)` calls one RPC from JSON using only server reflection;
`examples(markdown)` finds the grpcurl commands of a document (```sh blocks, `\\` continuations)
with the answer the text promises for each: a `# => CODE REASON` comment right after a command
means that error, otherwise success.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase


def grpcurl(address: str, method: str | None, body: dict | None = None, headers: dict[str, str] | None = None):
    """`grpcurl -plaintext [-H ...] [-d BODY] ADDRESS METHOD`, or `grpcurl ADDRESS list` when
    method is None. Returns the reply as grpcurl prints it (proto JSON) or raises grpc.RpcError."""
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if method is None:
            return sorted(database.get_services())
        pool = descriptor_pool.DescriptorPool(database)
        service_name, rpc_name = method.rsplit("/", 1)
        rpc = pool.FindServiceByName(service_name).FindMethodByName(rpc_name)
        request_class = message_factory.GetMessageClass(rpc.input_type)
        response_class = message_factory.GetMessageClass(rpc.output_type)
        request = json_format.ParseDict(body or {}, request_class())
        call = channel.unary_unary(
            f"/{service_name}/{rpc_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        reply = call(request, metadata=tuple((k.lower(), v) for k, v in (headers or {}).items()), timeout=10)
        return json.loads(json_format.MessageToJson(reply))


@dataclass
class Example:
    line: int
    method: str | None
    body: dict | None
    headers: dict[str, str]
    expect_code: str = "OK"
    expect_reason: str = ""


_EXPECT = re.compile(r"^#\s*=>\s*([A-Z_]+)(?:\s+([A-Z_]+))?")


def examples(markdown: str) -> list[Example]:
    found: list[Example] = []
    in_sh = False
    pending = ""
    start = 0
    for number, raw in enumerate(markdown.splitlines(), 1):
        line = raw.strip()
        if line.startswith("```"):
            in_sh = line in ("```sh", "```bash", "```shell") and not in_sh
            continue
        if not in_sh:
            continue
        if pending:
            pending += " " + line.rstrip("\\").strip()
            if not line.endswith("\\"):
                found.append(_parse(pending, start))
                pending = ""
            continue
        if line.startswith("grpcurl "):
            start = number
            if line.endswith("\\"):
                pending = line.rstrip("\\").strip()
            else:
                found.append(_parse(line, number))
            continue
        match = _EXPECT.match(line)
        if match and found:
            found[-1].expect_code, found[-1].expect_reason = match.group(1), match.group(2) or ""
    return found


def _parse(command: str, line: int) -> Example:
    words = shlex.split(command)[1:]
    headers: dict[str, str] = {}
    body = None
    positional: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-plaintext":
            index += 1
        elif word == "-H":
            name, _, value = words[index + 1].partition(":")
            headers[name.strip()] = value.strip()
            index += 2
        elif word == "-d":
            body = json.loads(words[index + 1])
            index += 2
        else:
            positional.append(word)
            index += 1
    method = positional[1] if len(positional) > 1 and positional[1] != "list" else None
    return Example(line, method, body, headers)
