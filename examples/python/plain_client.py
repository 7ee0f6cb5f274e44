"""A plain grpcio client of a meshed server: no xDS, only `ssl_channel_credentials` with the
trust bundle and a certificate from `meshctl certify`, and the server's DNS name (one of its
certificate's DNS SANs) as the target name override, as any gRPC user would write it.

Usage: plain_client.py TARGET CA_PEM KEY_PEM CERT_PEM SERVER_NAME NAME

Prints `OK <reply message>` or `ERROR <status code name> <details>`; exits 0 either way (the
test judges), 2 on bad usage.
"""

import sys

import grpc

import hello_pb


def main(argv):
    if len(argv) != 7:
        print(__doc__, file=sys.stderr)
        return 2
    target, ca, key, cert, server_name, name = argv[1:]
    with open(ca, "rb") as f:
        root_certificates = f.read()
    with open(key, "rb") as f:
        private_key = f.read()
    with open(cert, "rb") as f:
        certificate_chain = f.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=root_certificates,
        private_key=private_key,
        certificate_chain=certificate_chain,
    )
    options = [("grpc.ssl_target_name_override", server_name)]
    with grpc.secure_channel(target, credentials, options=options) as channel:
        try:
            print("OK " + hello_pb.say_hello(channel, name, timeout=10))
        except grpc.RpcError as error:
            print(f"ERROR {error.code().name} {error.details()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
