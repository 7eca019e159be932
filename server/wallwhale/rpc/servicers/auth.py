"""AuthService. Login sessions are not part of this version yet: every RPC is UNIMPLEMENTED."""

from __future__ import annotations

from wallwhale.rpc.servicers._unimplemented import fill_unimplemented
from wallwhale.v1 import auth_pb2, auth_pb2_grpc


@fill_unimplemented(auth_pb2.DESCRIPTOR.services_by_name["AuthService"])
class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    pass
