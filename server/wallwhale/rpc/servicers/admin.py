"""AdminService. Users, keys and accounts are managed through the CLI in this version; the RPCs are
UNIMPLEMENTED."""

from __future__ import annotations

from wallwhale.rpc.servicers._unimplemented import fill_unimplemented
from wallwhale.v1 import admin_pb2, admin_pb2_grpc


@fill_unimplemented(admin_pb2.DESCRIPTOR.services_by_name["AdminService"])
class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    pass
