"""A stock grpcio xDS server (gRFC A36): it serves only once the control service's xDS server
has sent its listener, with mTLS and RBAC from the mesh's policies. Its greeting names the
caller's verified identity. Prints `serving <port>` once started; runs until killed."""

import argparse
import os
import sys
import time
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hello_pb import decode_request, encode_reply  # noqa: E402


def say_hello(name, context):
    peers = context.peer_identities() or []
    caller = ",".join(p.decode() for p in peers) or "nobody"
    return "Hello, %s! from py-server to %s" % (name, caller)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert-dir", required=True, help="cert.pem, key.pem, ca.pem")
    args = parser.parse_args()

    def read(name):
        with open(os.path.join(args.cert_dir, name), "rb") as f:
            return f.read()

    # Used only if the listener carried no security config: still mTLS, never plaintext.
    fallback = grpc.ssl_server_credentials(
        [(read("key.pem"), read("cert.pem"))],
        root_certificates=read("ca.pem"),
        require_client_auth=True,
    )
    credentials = grpc.xds_server_credentials(fallback)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), xds=True)
    handler = grpc.method_handlers_generic_handler(
        "helloworld.Greeter",
        {
            "SayHello": grpc.unary_unary_rpc_method_handler(
                say_hello,
                request_deserializer=decode_request,
                response_serializer=encode_reply,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_secure_port("127.0.0.1:%d" % args.port, credentials)
    server.start()
    print("serving %d" % args.port, flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
