"""The greeter's messages (helloworld.HelloRequest / HelloReply: one string field, number 1),
encoded by hand so the tests need grpcio only, not a code generator."""

SAY_HELLO = "/helloworld.Greeter/SayHello"


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_request(name):
    """A HelloRequest with `name`."""
    data = name.encode()
    return b"\x0a" + _varint(len(data)) + data if data else b""


def decode_reply(data):
    """The `message` of a HelloReply."""
    pos = 0
    message = ""
    while pos < len(data):
        key = data[pos]
        pos += 1
        length = 0
        shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if key == 0x0A:
            message = data[pos : pos + length].decode()
        pos += length
    return message


def say_hello(channel, name, timeout=10, metadata=None, wait_for_ready=None):
    """Calls SayHello on `channel` and returns the reply's message."""
    call = channel.unary_unary(
        SAY_HELLO,
        request_serializer=encode_request,
        response_deserializer=decode_reply,
    )
    return call(name, timeout=timeout, metadata=metadata, wait_for_ready=wait_for_ready)


def encode_reply(message):
    """A HelloReply with `message` (for servers)."""
    return encode_request(message)


def decode_request(data):
    """The `name` of a HelloRequest (for servers)."""
    return decode_reply(data)
