"""A stock grpcio client on an `xds:///` target with xDS credentials: the gRPC library's own
proxyless mesh client, configured by the control service's xDS server through the bootstrap
file in GRPC_XDS_BOOTSTRAP. Prints one JSON object: the replies by message, and the failures by
status code and details."""

import argparse
import collections
import json
import os
import sys

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hello_pb import say_hello  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True, help="xds:///name.namespace")
    parser.add_argument("--ca", required=True, help="the mesh's trust bundle (fallback only)")
    parser.add_argument("--calls", type=int, default=1)
    parser.add_argument("--name", default="py")
    parser.add_argument("--header", action="append", default=[], help="key=value metadata")
    parser.add_argument(
        "--first-timeout", type=float, default=30, help="seconds the first call may wait"
    )
    args = parser.parse_args()

    with open(args.ca, "rb") as f:
        # Used only if the control service sent no security config: never plaintext.
        fallback = grpc.ssl_channel_credentials(root_certificates=f.read())
    credentials = grpc.xds_channel_credentials(fallback_credentials=fallback)
    metadata = [tuple(h.split("=", 1)) for h in args.header] or None
    replies = collections.Counter()
    failures = collections.Counter()
    with grpc.secure_channel(args.target, credentials) as channel:
        for i in range(args.calls):
            try:
                # The first call waits for the xDS resources and a connection.
                message = say_hello(
                    channel,
                    args.name,
                    timeout=args.first_timeout if i == 0 else 10,
                    metadata=metadata,
                    wait_for_ready=(i == 0),
                )
                replies[message] += 1
            except grpc.RpcError as error:
                failures["%s: %s" % (error.code().name, error.details())] += 1
    print(json.dumps({"replies": replies, "failures": failures}))


if __name__ == "__main__":
    main()
