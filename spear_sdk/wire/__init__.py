"""The layer both sides share: generated protocol modules, the value codec and the error hierarchy."""

from spear_sdk.wire._gen import function_pb2, function_pb2_grpc, object_pb2, object_pb2_grpc

__all__ = ["function_pb2", "function_pb2_grpc", "object_pb2", "object_pb2_grpc"]
