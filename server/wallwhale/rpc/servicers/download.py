"""DownloadService. The download engine is not part of this version yet: every RPC is UNIMPLEMENTED."""

from __future__ import annotations

from wallwhale.rpc.servicers._unimplemented import fill_unimplemented
from wallwhale.v1 import download_pb2, download_pb2_grpc


@fill_unimplemented(download_pb2.DESCRIPTOR.services_by_name["DownloadService"])
class DownloadServicer(download_pb2_grpc.DownloadServiceServicer):
    pass
