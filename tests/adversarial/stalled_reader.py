"""A client in its own process that opens FetchArchive streams and stops reading (its buffers are
not the server's memory): `python stalled_reader.py ADDRESS KEY DOWNLOAD_ID COUNT`. It prints one
JSON line (how many streams were held, the refusals' codes and messages), then holds the streams
until its stdin closes."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
from grpc import aio

from wallwhale.v1 import download_pb2, download_pb2_grpc


async def main(address: str, key: str, download_id: str, count: int) -> None:
    async with aio.insecure_channel(address) as channel:
        stub = download_pb2_grpc.DownloadServiceStub(channel)
        held, refused = [], []
        for _ in range(count):
            call = stub.FetchArchive(
                download_pb2.FetchArchiveRequest(id=download_id), metadata=(("x-api-key", key),)
            )
            try:
                await call.read()
                held.append(call)
            except grpc.RpcError as error:
                refused.append([error.code().name, error.details() or ""])
        print(json.dumps({"held": len(held), "refused": refused}), flush=True)
        await asyncio.to_thread(sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
