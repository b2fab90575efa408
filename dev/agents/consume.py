#!/usr/bin/env python3
"""A third-party consumer of Marketing IQ topics: Confluent's Python client (confluent-kafka)
with its schema-registry Avro deserializer (fastavro), nothing of ours.

Reads one topic from given partition offsets up to the end offsets seen at start, with
isolation.level=read_committed, and prints one JSON object per record in Avro's own value
representation (dates as days since the epoch, timestamps as epoch milliseconds), so a caller can
compare them with what it produced.

    consume.py --topic mi.fact.ad_performance.v1 --start 0:120 --start 3:7
"""
import argparse
import datetime as dt
import json
import sys

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

EPOCH = dt.date(1970, 1, 1)


def plain(value):
    """Avro logical types back to their wire representation."""
    if isinstance(value, dt.datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dt.date):
        return (value - EPOCH).days
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--brokers", default="127.0.0.1:9092")
    p.add_argument("--registry", default="http://127.0.0.1:8081/apis/ccompat/v7")
    p.add_argument("--topic", required=True)
    p.add_argument("--start", action="append", default=[], help="partition:offset (repeatable)")
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    deserialize = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "mi-wire-check",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        # read_committed stops at the last stable offset, before transaction markers: the end
        # of a partition is its EOF event, not its high watermark.
        "enable.partition.eof": True,
    })
    starts = [tuple(int(x) for x in s.split(":")) for s in args.start]
    ends = {}
    for partition, offset in starts:
        _, high = consumer.get_watermark_offsets(TopicPartition(args.topic, partition), timeout=10)
        if high > offset:
            ends[partition] = high
    consumer.assign([TopicPartition(args.topic, p, o) for p, o in starts if p in ends])
    deadline = dt.datetime.now() + dt.timedelta(seconds=args.timeout)
    while ends and dt.datetime.now() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                ends.pop(msg.partition(), None)
            else:
                print(f"consume.py: {msg.error()}", file=sys.stderr)
            continue
        ctx = SerializationContext(msg.topic(), MessageField.VALUE)
        record = deserialize(msg.value(), ctx)
        print(json.dumps({"partition": msg.partition(), "offset": msg.offset(),
                          "key": msg.key().decode(), "value": plain(record)}), flush=True)
        if msg.offset() + 1 >= ends.get(msg.partition(), 0):
            ends.pop(msg.partition(), None)
    consumer.close()
    if ends:
        print(f"consume.py: timed out before the end of partitions {sorted(ends)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
