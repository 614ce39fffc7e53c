"""JSON numbers from a client in any language reach Python functions as ``json.loads`` gives them.

A v1 client sends numbers as ``google.protobuf.Value``, a double. The client here is built from the
``.proto`` files alone: ``grpc_tools.protoc`` generates its modules into a temporary folder, and it runs in
a process of its own that imports neither the SDK nor its codec, packing ``Value(number_value=3)`` by hand.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from harness import Harness

ROOT = Path(__file__).resolve().parents[2]

CLIENT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])  # the modules generated from the .proto files, nothing else of ours
    import grpc
    from google.protobuf import any_pb2, struct_pb2, wrappers_pb2
    from spearlet import function_pb2 as fpb, function_pb2_grpc as fgrpc

    assert "spear_sdk" not in sys.modules
    stub = fgrpc.FunctionServiceStub(grpc.insecure_channel(sys.argv[2]))

    def call(location, number):
        task = stub.RegisterTask(fpb.RegisterTaskRequest(
            task_name=location.replace(":", "-"),
            artifact_spec=fpb.ArtifactSpec(artifact_type="python", location=location),
        )).task
        argument = any_pb2.Any()
        argument.Pack(struct_pb2.Value(number_value=number))
        result = stub.InvokeFunction(fpb.InvokeFunctionRequest(
            task_id=task.task_id, parameters=[fpb.FunctionParameter(value=argument)]
        )).result
        answer = {"status": fpb.ExecutionStatus.Name(result.status), "error_code": result.error_code,
                  "error_message": result.error_message}
        # A result is a Value, or an Int64Value (a wrapper any client knows) for a top-level int.
        for message in (struct_pb2.Value(), wrappers_pb2.Int64Value()):
            if result.result.Is(message.DESCRIPTOR):
                result.result.Unpack(message)
                is_value = message.DESCRIPTOR.name == "Value"
                answer["value"] = message.number_value if is_value else message.value
        return answer

    print(json.dumps({"exit": call("os:_exit", 3), "factorial": call("math:factorial", 5)}))
    """
)


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """Python modules generated from ``proto/spearlet/*.proto`` by grpc_tools, in a folder of their own."""
    generated = tmp_path / "generated"
    generated.mkdir()
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "spearlet").glob("*.proto"))
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'proto'}",
            f"--python_out={generated}",
            f"--grpc_python_out={generated}",
            *protos,
        ],
        check=True,
    )
    return generated


async def test_a_client_built_from_the_proto_files_sends_integral_numbers_as_ints(
    shared: Harness, generated: Path, tmp_path: Path
) -> None:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(generated),
        f"127.0.0.1:{shared.server.port}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(client.communicate(), 60)
    assert client.returncode == 0, err.decode()
    answers = json.loads(out)

    # os._exit(3) ran: an int reached it (a float raises TypeError there, an EXCEPTION, not a crash).
    crashed = answers["exit"]
    assert (crashed["status"], crashed["error_code"]) == ("EXECUTION_STATUS_FAILED", "WORKER_CRASHED"), (
        crashed
    )
    assert "TypeError" not in crashed["error_message"], crashed
    # math.factorial(5) refuses a float too; its int result comes back as a number any client reads.
    assert answers["factorial"]["status"] == "EXECUTION_STATUS_COMPLETED", answers["factorial"]
    assert answers["factorial"]["value"] == 120, answers["factorial"]
