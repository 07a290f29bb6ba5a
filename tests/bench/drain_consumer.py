#!/usr/bin/env python3
"""A small hand-written Coldchain consumer: the yardstick of `tests/bench.sh drain`.

What a competent integrator would write in an afternoon: paho-mqtt with a
persistent session (clean_session=False, QoS 1), every message's HMAC-SHA256
tag checked (proto/README.md), its readings decoded (JSON envelope or signed
postcard frame) and inserted into SQLite (WAL, synchronous=FULL) with
INSERT OR IGNORE on (device, boot, seq, idx), a commit per 100 messages, and
the PUBACKs of those messages sent only after their commit (paho manual acks).

It exits after --messages messages and prints one JSON line:
{"messages": N, "readings": rows in the table, "bad_tag": N, "malformed": N}.
"""
import argparse
import hashlib
import hmac
import json
import sqlite3
import sys

import paho.mqtt.client as mqtt

COMMIT_EVERY = 100
KINDS = ["rtd", "thermocouple", "ambient", "humidity"]


class Postcard:
    """Just enough of postcard to read a readings Frame (proto/src/frame.rs)."""

    def __init__(self, b):
        self.b, self.i = b, 0

    def varint(self):
        v = shift = 0
        while True:
            x = self.b[self.i]
            self.i += 1
            v |= (x & 0x7F) << shift
            if x < 0x80:
                return v
            shift += 7

    def u8(self):
        x = self.b[self.i]
        self.i += 1
        return x

    def zigzag(self):
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def frame(self):
        n = self.varint()
        device = self.b[self.i:self.i + n].decode()
        self.i += n
        boot, seq = self.varint(), self.varint()
        tkind, t = self.varint(), self.varint()
        if self.varint() != 0:
            return None  # events or status: not readings
        rs = []
        for _ in range(self.varint()):
            channel, kind, dt = self.u8(), KINDS[self.varint()], self.varint()
            if self.varint() == 0:
                value, fault = self.zigzag(), None
            else:
                value, fault = None, self.varint()
            rs.append((channel, kind, dt, value, fault))
        return device, boot, seq, tkind, t, rs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--messages", type=int, required=True)
    ap.add_argument("--key", required=True, help="the devices' key, 64 hex digits")
    ap.add_argument("--db", required=True)
    a = ap.parse_args()
    key = bytes.fromhex(a.key)

    db = sqlite3.connect(a.db)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS readings (device TEXT, boot INT, seq INT, idx INT,"
        " channel INT, kind TEXT, time_ms INT, value INT, fault INT,"
        " PRIMARY KEY (device, boot, seq, idx))"
    )
    db.commit()
    st = {"messages": 0, "bad_tag": 0, "malformed": 0}
    pending = []

    def verify(body, tag):
        mac = hmac.new(key, body, hashlib.sha256).digest()[:16]
        return hmac.compare_digest(mac, tag)

    def decode(payload, topic):
        if topic.endswith("/json"):
            # The tag covers the frame's exact bytes: {"frame":<frame>,"tag":"<hex>"}
            cut = payload.rfind(b',"tag":"')
            if not payload.startswith(b'{"frame":') or cut < 0:
                return None
            body, tag = payload[9:cut], bytes.fromhex(payload[cut + 8:-2].decode())
            if not verify(body, tag):
                return "bad"
            f = json.loads(body)
            rs = f["body"].get("readings")
            if rs is None:
                return None
            t = f["time"]
            tk, tv = ("unix_ms", 0) if "unix_ms" in t else ("uptime_ms", 1)
            rows = [
                (r["channel"], r["kind"], r["dt_ms"], r["value"].get("valid"),
                 None if "valid" in r["value"] else r["value"]["fault"])
                for r in rs
            ]
            return f["device"], f["boot"], f["seq"], tv, t[tk], rows
        body, tag = payload[:-16], payload[-16:]
        if not verify(body, tag):
            return "bad"
        return Postcard(body).frame()

    def on_message(client, userdata, msg):
        try:
            f = decode(msg.payload, msg.topic)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError):
            f = None
        if f == "bad":
            st["bad_tag"] += 1
        elif f is None:
            st["malformed"] += 1
        else:
            device, boot, seq, _tkind, t, rs = f
            db.executemany(
                "INSERT OR IGNORE INTO readings VALUES (?,?,?,?,?,?,?,?,?)",
                [(device, boot, seq, i, ch, kind, t + dt, value, fault)
                 for i, (ch, kind, dt, value, fault) in enumerate(rs)],
            )
        st["messages"] += 1
        pending.append(msg.mid)
        if len(pending) >= COMMIT_EVERY or st["messages"] >= a.messages:
            db.commit()
            for mid in pending:
                client.ack(mid, 1)
            pending.clear()
        if st["messages"] >= a.messages:
            client.disconnect()

    def on_connect(client, userdata, flags, reason, props):
        client.subscribe(a.topic, qos=1)

    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=a.client_id,
        clean_session=False,
        manual_ack=True,
    )
    c.max_inflight_messages_set(1000)
    c.on_message = on_message
    c.on_connect = on_connect
    c.connect(a.host, a.port, keepalive=30)
    c.loop_forever()
    st["readings"] = db.execute("SELECT count(*) FROM readings").fetchone()[0]
    db.close()
    print(json.dumps(st))
    return 0


if __name__ == "__main__":
    sys.exit(main())
