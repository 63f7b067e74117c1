#!/usr/bin/env python3
"""Ask a Kafka broker for metadata with a raw Metadata request (stdlib only).

Used by scripts/kafka as its readiness check: the broker is ready once it
answers a Metadata request that lists at least one broker (an open port is
not enough).

Usage:
  kafka_metadata_probe.py [--host H] [--port P]              # exit 0 if a broker is listed
  kafka_metadata_probe.py [--port P] --list                  # also print every topic and its partition count
  kafka_metadata_probe.py [--port P] --topic NAME            # request NAME (auto-creates it when the broker
                                                             # allows it), wait for its leaders, print
                                                             # "NAME <partitions>"
  kafka_metadata_probe.py [--port P] --topic NAME --no-create  # same, but never creates it: exit 1 if absent

The port defaults to $KAFKA_PORT, else 9092. Exit status: 0 success, 1 the
broker answered but the check failed, 2 no usable answer (refused, closed,
timed out, malformed).

Wire format: Metadata (api_key 3) version 4, the last non-flexible version,
which adds allow_auto_topic_creation to version 1's body.
"""

import argparse
import os
import socket
import struct
import sys
import time

API_METADATA = 3
METADATA_VERSION = 4
CLIENT_ID = b"hatchet-run-metrics-probe"

# Kafka error codes that only mean "not ready yet" for a topic.
RETRIABLE_TOPIC_ERRORS = {5: "LEADER_NOT_AVAILABLE", 3: "UNKNOWN_TOPIC_OR_PARTITION"}


class ProbeError(Exception):
    """No usable answer from the broker."""


class Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def take(self, fmt):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ProbeError("truncated Metadata response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def int16(self):
        return self.take(">h")

    def int32(self):
        return self.take(">i")

    def boolean(self):
        return self.take(">b") != 0

    def string(self):
        length = self.int16()
        if length < 0:
            return None
        if self.pos + length > len(self.data):
            raise ProbeError("truncated Metadata response")
        value = self.data[self.pos:self.pos + length].decode("utf-8", "replace")
        self.pos += length
        return value

    def array(self, read_item):
        count = self.int32()
        if count < 0:
            return None
        return [read_item() for _ in range(count)]


def encode_string(value):
    raw = value.encode("utf-8")
    return struct.pack(">h", len(raw)) + raw


def build_request(correlation_id, topics, allow_auto_create):
    # Request header v1: api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", API_METADATA, METADATA_VERSION, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    # Body v4: topics (nullable array of names; null = all topics), allow_auto_topic_creation.
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(encode_string(t) for t in topics)
    body += struct.pack(">b", 1 if allow_auto_create else 0)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock, size):
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = sock.recv(min(remaining, 1 << 16))
        if not chunk:
            raise ProbeError("connection closed by the broker before a full response")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def parse_response(data, correlation_id):
    r = Reader(data)
    if r.int32() != correlation_id:
        raise ProbeError("correlation id mismatch")
    r.int32()  # throttle_time_ms (v3+)

    def broker():
        node_id = r.int32()
        host = r.string()
        port = r.int32()
        r.string()  # rack (v1+)
        return (node_id, host, port)

    brokers = r.array(broker) or []
    r.string()  # cluster_id (v2+)
    r.int32()  # controller_id (v1+)

    def int32_array():
        return r.array(r.int32)

    def partition():
        error = r.int16()
        index = r.int32()
        leader = r.int32()
        int32_array()  # replica_nodes
        int32_array()  # isr_nodes
        return (error, index, leader)

    def topic():
        error = r.int16()
        name = r.string()
        internal = r.boolean()
        partitions = r.array(partition) or []
        return {"error": error, "name": name, "internal": internal, "partitions": partitions}

    topics = r.array(topic) or []
    return brokers, topics


def metadata(host, port, topics, allow_auto_create, timeout, correlation_id=1):
    request = build_request(correlation_id, topics, allow_auto_create)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request)
            (size,) = struct.unpack(">i", recv_exact(sock, 4))
            if size <= 0 or size > 64 << 20:
                raise ProbeError("implausible response size %d" % size)
            return parse_response(recv_exact(sock, size), correlation_id)
    except OSError as err:
        raise ProbeError("%s:%d: %s" % (host, port, err)) from err


def topic_ready(t):
    return t["error"] == 0 and t["partitions"] and all(p[0] == 0 and p[2] >= 0 for p in t["partitions"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("KAFKA_PORT", "9092")))
    parser.add_argument("--topic", help="request this topic and print its partition count")
    parser.add_argument("--no-create", action="store_true", help="with --topic: do not auto-create it")
    parser.add_argument("--list", action="store_true", help="print all topics and their partition counts")
    parser.add_argument("--timeout", type=float, default=2.0, help="socket timeout per request (s)")
    parser.add_argument("--wait", type=float, default=15.0,
                        help="with --topic: how long to wait for the topic's leaders (s)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no message on failure")
    args = parser.parse_args()

    def fail(code, message):
        if not args.quiet:
            print("kafka_metadata_probe: %s" % message, file=sys.stderr)
        return code

    try:
        if args.topic is None:
            brokers, topics = metadata(args.host, args.port, None, False, args.timeout)
            if not brokers:
                return fail(1, "the broker answered but listed no brokers")
            if args.list:
                for t in sorted(topics, key=lambda t: t["name"] or ""):
                    print("%s %d" % (t["name"], len(t["partitions"])))
            return 0

        deadline = time.monotonic() + args.wait
        correlation_id = 1
        while True:
            brokers, topics = metadata(args.host, args.port, [args.topic], not args.no_create,
                                       args.timeout, correlation_id)
            match = [t for t in topics if t["name"] == args.topic]
            if match and topic_ready(match[0]):
                print("%s %d" % (args.topic, len(match[0]["partitions"])))
                return 0
            error = match[0]["error"] if match else None
            if args.no_create and error == 3:
                return fail(1, "topic %s does not exist" % args.topic)
            if error not in RETRIABLE_TOPIC_ERRORS and error not in (0, None):
                return fail(1, "topic %s: Kafka error code %d" % (args.topic, error))
            if time.monotonic() >= deadline:
                return fail(1, "topic %s not ready after %.0fs (error code %s)" % (args.topic, args.wait, error))
            correlation_id += 1
            time.sleep(0.2)
    except ProbeError as err:
        return fail(2, str(err))


if __name__ == "__main__":
    sys.exit(main())
