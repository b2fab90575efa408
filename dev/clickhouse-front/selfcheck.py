#!/usr/bin/env python3
"""Self-check for chdb_http.py (DEV/TEST tool). Starts the front on a free port with a
temporary data dir, talks to it over real HTTP and exits non-zero on any failure.

    python3 dev/clickhouse-front/selfcheck.py            # functional checks
    python3 dev/clickhouse-front/selfcheck.py --bench    # + 1,000,000-row RowBinary insert benchmark
"""
import glob, gzip, http.client, json, os, re, signal, socket, struct, subprocess, sys, tempfile, time
from concurrent.futures import ThreadPoolExecutor
import urllib.parse

import lz4.block, lz4.frame

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # keep __pycache__ out of the repo
from chdb_http import CityHash128, checksum, frame  # noqa: E402  (framing helpers only)

FAILURES = []


def check(name, cond, detail=""):
    print(("ok   " if cond else "FAIL ") + name + ("" if cond else f"  -- {detail!r}"[:600]))
    if not cond:
        FAILURES.append(name)


class Front:
    def __init__(self, data_dir):
        self.data_dir, self.log = data_dir, os.path.join(data_dir + ".log")
        start = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "chdb_http.py"), "--port", "0",
                                      "--data-dir", data_dir], stderr=open(self.log, "ab"))
        for _ in range(300):
            m = re.search(r"on http://127\.0\.0\.1:(\d+)", open(self.log).read()[start:])
            if m:
                self.port = int(m.group(1))
                break
            if self.proc.poll() is not None:
                sys.exit("front exited at start-up:\n" + open(self.log).read())
            time.sleep(0.1)
        else:
            sys.exit("front did not start")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)  # keep-alive

    def req(self, method="POST", params=None, body=None, headers=None):
        url = "/?" + urllib.parse.urlencode(params or {}) if params else "/"
        self.conn.request(method, url, body=body, headers=headers or {},
                          encode_chunked=bool(headers and headers.get("Transfer-Encoding") == "chunked"))
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    def q(self, sql, **params):
        return self.req("POST", params, sql.encode())

    def stop(self):
        self.conn.close()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)


def varint(n):
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def rbs(s):
    s = s.encode()
    return varint(len(s)) + s


COLS = [("id", "UInt64"), ("user_id", "UInt32"), ("delta", "Int64"), ("amount", "Float64"),
        ("country", "String"), ("ts", "DateTime"), ("day", "Date"), ("flag", "UInt8"),
        ("channel", "String"), ("score", "Float32")]
ROW = struct.Struct("<QIqd B2s IHB B7s f")


def rowbinary(n, start=0, names_and_types=False):
    head = b""
    if names_and_types:
        head = varint(len(COLS)) + b"".join(rbs(c) for c, _ in COLS) + b"".join(rbs(t) for _, t in COLS)
    p = ROW.pack
    return head + b"".join(p(start + i, i % 1000, -i, i * 0.5, 2, b"DE", 1700000000 + i, 19700 + i % 30,
                             i & 1, 7, b"email_a", i / 3) for i in range(n))


def chunks(data, size=65536):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def unframe_checked(buf):
    out, off = [], 0
    while off < len(buf):
        method, csize, usize = struct.unpack_from("<BII", buf, off + 16)
        block = buf[off + 16:off + 16 + csize]
        if checksum(block) != buf[off:off + 16] or method != 0x82:
            raise ValueError("bad block")
        out.append(lz4.block.decompress(block[9:], uncompressed_size=usize))
        off += 16 + csize
    return b"".join(out)


ERR_RE = re.compile(rb"^Code: (\d+)\. DB::Exception: .*\. \(([A-Z0-9_]+)\) \(version [\d.]+\)\n$", re.S)


def check_error(name, res, code, status):
    st, h, body = res
    m = ERR_RE.match(body)
    check(name, st == status and h.get("x-clickhouse-exception-code") == str(code)
          and m is not None and m.group(1) == str(code).encode(), (st, h.get("x-clickhouse-exception-code"), body))


def functional(tmp):
    f = Front(os.path.join(tmp, "data"))
    ddl = ", ".join(f"{c} {t}" for c, t in COLS)
    try:
        c = http.client.HTTPConnection("127.0.0.1", f.port)
        for path in ("/ping", "/", "/replicas_status"):
            c.request("GET", path)
            r = c.getresponse()
            check(f"GET {path} -> Ok.", (r.status, r.read()) == (200, b"Ok.\n"))
        check("GET ?query=SELECT 1", f.req("GET", {"query": "SELECT 1"})[::2] == (200, b"1\n"))
        check("query param + body concatenated", f.req("POST", {"query": "SELECT"}, b"1 + 1")[2] == b"2\n")
        check("CREATE DATABASE", f.q("CREATE DATABASE mi")[0] == 200)
        st, _, b = f.q(f"CREATE TABLE events ({ddl}) ENGINE = MergeTree ORDER BY id SETTINGS "
                       "non_replicated_deduplication_window = 100, min_bytes_for_wide_part = 0", database="mi")
        check("CREATE TABLE MergeTree in database=mi", st == 200, b)

        # RowBinaryWithNamesAndTypes, decompress=1 (LZ4 blocks), chunked, auth headers ignored
        data = rowbinary(1000, 0, names_and_types=True)
        body = b"".join(frame(part, 4096) for part in chunks(data, 20000))  # several blocks
        st, h, b = f.req("POST", {"database": "mi", "decompress": "1", "password": "secret-pw-1",
                                  "query": f"INSERT INTO events ({', '.join(c for c, _ in COLS)}) "
                                           "FORMAT RowBinaryWithNamesAndTypes"},
                         chunks(body, 7777), {"Transfer-Encoding": "chunked", "X-ClickHouse-User": "default",
                                              "X-ClickHouse-Key": "secret-key-2"})
        summ = json.loads(h.get("x-clickhouse-summary", "{}"))
        check("RowBinaryWithNamesAndTypes insert, decompress=1, chunked", st == 200 and
              summ.get("written_rows") == "1000", (st, b, summ))
        # a NONE-method block (0x02) works too
        data = rowbinary(1000, 1000, names_and_types=True)
        none_block = struct.pack("<BII", 0x02, 9 + len(data), len(data)) + data
        st, _, b = f.req("POST", {"database": "mi", "decompress": "1", "query":
                                  "INSERT INTO events FORMAT RowBinaryWithNamesAndTypes"},
                         checksum(none_block) + none_block)
        check("decompress=1 with method NONE", st == 200, b)
        bad = bytearray(body)
        bad[3] ^= 0xFF
        check_error("corrupted block checksum -> 40", f.req("POST", {"database": "mi", "decompress": "1",
                    "query": "INSERT INTO events FORMAT RowBinary"}, bytes(bad)), 40, 500)

        # JSONEachRow: statement + data in the body, gzip request body
        rows = "\n".join(json.dumps({"id": 100000 + i, "country": "FR", "channel": "ads", "ts": "2024-01-02 03:04:05"})
                         for i in range(5))
        st, _, b = f.req("POST", {"date_time_input_format": "best_effort"},
                         gzip.compress(f"INSERT INTO mi.events FORMAT JSONEachRow\n{rows}\n".encode()),
                         {"Content-Encoding": "gzip"})
        check("JSONEachRow insert (statement in body, gzip body)", st == 200, b)
        st, _, b = f.q("INSERT INTO mi.events (id, country) VALUES (200000, 'a;b'), (200001, 'c')")
        check("INSERT ... VALUES in body", st == 200, b)
        st, _, b = f.req("POST", {"query": "INSERT INTO mi.events (id, channel) FORMAT CSV"},
                         b"300000,x\n300001,y\n", {"Transfer-Encoding": "chunked"})
        check("INSERT FORMAT CSV, data in body", st == 200, b)
        check("row count after inserts", f.q("SELECT count() FROM mi.events")[2] == b"2009\n",
              f.q("SELECT count() FROM mi.events"))

        # SELECT in several formats; FORMAT clause beats default_format
        sel = "SELECT id, country, amount FROM mi.events ORDER BY id LIMIT 3"
        st, h, b = f.q(sel)
        check("default TabSeparated", st == 200 and b.startswith(b"0\tDE\t0\n") and
              h["x-clickhouse-format"] == "TabSeparated", b)
        st, h, b = f.q(sel, default_format="JSONEachRow")
        check("default_format=JSONEachRow", [json.loads(l)["country"] for l in b.splitlines()] == ["DE"] * 3, b)
        st, h, b = f.req("POST", None, sel.encode(), {"X-ClickHouse-Format": "CSVWithNames"})
        check("X-ClickHouse-Format: CSVWithNames", b.startswith(b'"id","country","amount"\n') and
              h["content-type"].startswith("text/csv"), b)
        st, h, b = f.q(sel + " FORMAT JSON", default_format="CSV")
        check("FORMAT JSON clause wins", json.loads(b)["rows"] == 3 and h["x-clickhouse-format"] == "JSON", b[:200])
        st, h, b = f.q(sel, default_format="RowBinaryWithNamesAndTypes")
        check("RowBinaryWithNamesAndTypes output", b.startswith(b"\x03\x02id\x07country\x06amount\x06UInt64") and
              h["content-type"] == "application/octet-stream", b[:60])
        for fmt, magic in (("Parquet", b"PAR1"), ("ArrowStream", b"\xff\xff\xff\xff"), ("Native", b"\x03\x03")):
            st, _, b = f.q(sel, default_format=fmt)
            check(f"{fmt} output", st == 200 and b.startswith(magic), b[:20])
        check_error("unknown format -> 73", f.q(sel, default_format="Bogus"), 73, 404)

        # settings: applied per request, never leaking
        check_error("max_result_rows=1&result_overflow_mode=throw -> 396",
                    f.q("SELECT id FROM mi.events", max_result_rows="1", result_overflow_mode="throw"), 396, 500)
        check("settings do not leak", f.q("SELECT count() FROM (SELECT id FROM mi.events)")[2] == b"2009\n")
        gs = "SELECT getSetting('max_threads'), getSetting('output_format_json_quote_64bit_integers'), " \
             "getSetting('log_comment')"
        st, _, b = f.q(gs, max_threads="3", output_format_json_quote_64bit_integers="0", log_comment="it's \\ ok")
        check("settings applied (incl. quoting)", b == b"3\tfalse\tit\\'s \\\\ ok\n", b)
        check("settings reset next request", f.q(gs)[2].split(b"\t")[0] != b"3")
        f.q("SET max_threads = 1")
        check("SET statement does not leak", f.q(gs)[2].split(b"\t")[0] != b"1")
        check_error("unknown setting -> 115", f.q("SELECT 1", no_such_setting="1"), 115, 404)
        st, _, b = f.q("DESCRIBE TABLE mi.events", describe_include_subcolumns="1", default_format="JSONEachRow")
        check("describe_include_subcolumns", st == 200 and b.count(b"\n") >= 10, b[:200])
        st, _, b = f.q("SELECT toUInt64(1) AS x", default_format="JSONEachRow",
                       output_format_json_quote_64bit_integers="1")
        check("output_format_* setting", b == b'{"x":"1"}\n', b)
        check("max_execution_time accepted", f.q("SELECT 1", max_execution_time="5")[0] == 200)

        # insert_deduplication_token with non_replicated_deduplication_window
        batch = rowbinary(10, 500000)
        ins = {"database": "mi", "query": "INSERT INTO events FORMAT RowBinary", "insert_deduplication_token": "batch-1"}
        r1, r2 = f.req("POST", ins, batch), f.req("POST", ins, batch)
        cnt = f.q("SELECT count() FROM mi.events WHERE id >= 500000")[2]
        check("insert_deduplication_token drops a repeated batch", r1[0] == r2[0] == 200 and cnt == b"10\n", (cnt, r2))
        ins["insert_deduplication_token"] = "batch-2"
        f.req("POST", ins, batch)
        check("new token inserts again", f.q("SELECT count() FROM mi.events WHERE id >= 500000")[2] == b"20\n")
        st, _, b = f.req("POST", {"database": "mi", "query": "INSERT INTO events FORMAT RowBinary",
                                  "async_insert": "1", "wait_for_async_insert": "1"}, rowbinary(3, 600000))
        check("async_insert=1&wait_for_async_insert=1",
              st == 200 and f.q("SELECT count() FROM mi.events WHERE id >= 600000")[2] == b"3\n", b)

        # query parameters: URL param_* and multipart/form-data (what clickhouse-rs 0.15 sends)
        st, _, b = f.q("SELECT {n:UInt32} + 1, {s:String}", param_n="41", param_s="it's")
        check("param_ binding (URL)", b == b"42\tit\\'s\n", b)  # TSV escapes '

        bd = "----chdbhttpcheck"
        mp = "".join(f'--{bd}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in
                     [("query", "SELECT count() FROM events WHERE id < {lim:UInt64}"), ("param_lim", "5")]) + f"--{bd}--\r\n"
        st, _, b = f.req("POST", {"database": "mi", "default_format": "TSV"}, mp.encode(),
                         {"Content-Type": f"multipart/form-data; boundary={bd}"})
        check("param_ binding (multipart/form-data)", (st, b) == (200, b"5\n"), (st, b))

        # errors, databases, GET readonly, multi-statements
        check_error("syntax error -> 62", f.q("SELEC 1 FROM"), 62, 400)
        check_error("unknown database -> 81", f.q("SELECT 1", database="nodb"), 81, 404)
        check_error("unknown table -> 60", f.q("SELECT * FROM nope"), 60, 404)
        check_error("multi-statements -> 62", f.q("SELECT 1; SELECT 2"), 62, 400)
        check("single trailing ; is fine", f.q("SELECT 1;")[2] == b"1\n")
        check_error("GET is readonly -> 164", f.req("GET", {"query": "CREATE TABLE g (a Int8) ENGINE = Memory"}), 164, 403)
        check_error("empty query -> 62", f.q(""), 62, 400)
        check("X-ClickHouse-Database header",
              f.req("POST", None, b"SELECT currentDatabase()", {"X-ClickHouse-Database": "mi"})[2] == b"mi\n")
        f.q("USE mi")
        check("USE does not leak", f.q("SELECT currentDatabase()")[2] == b"default\n")
        check("query_id echoed", f.q("SELECT 1", query_id="q-123")[1].get("x-clickhouse-query-id") == "q-123")

        # response compression
        st, h, b = f.q("SELECT number FROM numbers(300000)", compress="1")
        check("compress=1 (LZ4 blocks, CityHash128)", st == 200 and unframe_checked(b) ==
              b"".join(b"%d\n" % i for i in range(300000)), (st, b[:40]))
        st, h, b = f.req("POST", {"enable_http_compression": "1"}, b"SELECT 42", {"Accept-Encoding": "gzip"})
        check("enable_http_compression=1 + gzip", h.get("content-encoding") == "gzip" and gzip.decompress(b) == b"42\n")
        st, h, b = f.req("POST", {"enable_http_compression": "1"}, b"SELECT 42", {"Accept-Encoding": "lz4"})
        check("enable_http_compression=1 + lz4 (frame)", h.get("content-encoding") == "lz4" and
              lz4.frame.decompress(b) == b"42\n")
        check("no http compression without the setting",
              f.req("POST", None, b"SELECT 42", {"Accept-Encoding": "lz4"})[1].get("content-encoding") is None)

        # HEAD, a client that drops a chunked INSERT half-way (nothing may be inserted), concurrency
        c.request("HEAD", "/ping")
        r = c.getresponse()
        check("HEAD /ping", r.status == 200 and r.read() == b"")
        s = socket.create_connection(("127.0.0.1", f.port))
        s.sendall(b"POST /?query=INSERT%20INTO%20mi.events%20(id)%20FORMAT%20CSV HTTP/1.1\r\nHost: x\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n8\r\n7000000\n\r\n")
        time.sleep(0.3)
        s.close()
        time.sleep(0.3)
        check("aborted chunked INSERT inserts nothing",
              f.q("SELECT count() FROM mi.events WHERE id = 7000000")[2] == b"0\n")

        def worker(i):
            w = Front.__new__(Front)
            w.conn = http.client.HTTPConnection("127.0.0.1", f.port, timeout=120)
            w.q(f"CREATE TABLE mi.c{i} (a UInt32) ENGINE = MergeTree ORDER BY a")
            bad = 0
            for j in range(20):
                bad += w.req("POST", {"query": f"INSERT INTO mi.c{i} FORMAT CSV", "decompress": "1"},
                             frame(b"%d\n" % j))[0] != 200
                got = w.q("SELECT getSetting('max_threads'), currentDatabase()", max_threads=str(i + 1),
                          database="mi" if j % 2 else "default")[2]
                bad += got != b"%d\t%s\n" % (i + 1, b"mi" if j % 2 else b"default")
            bad += w.q(f"SELECT count() FROM mi.c{i}")[2] != b"20\n"
            return bad
        with ThreadPoolExecutor(8) as pool:
            check("8 concurrent clients: isolated settings/database, all inserts", sum(pool.map(worker, range(8))) == 0)

        # ground truth for the checksum: ClickHouse's own MergeTree .bin files use the same blocks
        f.q("OPTIMIZE TABLE mi.events FINAL")
        bins = [p for p in glob.glob(os.path.join(f.data_dir, "store", "*", "*", "*", "id.bin"))]
        ok = bool(bins) and CityHash128 is not None
        for p in bins:
            raw = open(p, "rb").read()
            csize = struct.unpack_from("<I", raw, 17)[0]
            ok = ok and checksum(raw[16:16 + csize]) == raw[:16]
        check("CityHash128 checksum matches ClickHouse .bin files", ok, bins)
    finally:
        rc = f.stop()
    log = open(f.log).read()
    check("SIGTERM: clean exit, engine closed", rc == 0 and "engine closed" in log, (rc, log[-300:]))
    check("log has one line per request, no secrets", "secret" not in log and "SELECT 1" in log, log[-500:])
    f2 = Front(f.data_dir)
    try:
        check("data persists across restart", f2.q("SELECT count() FROM mi.events")[2] == b"2032\n",
              f2.q("SELECT count() FROM mi.events"))
    finally:
        f2.stop()


def bench(tmp, n=1_000_000, runs=3):
    """Median of `runs` inserts of n RowBinary rows into an emptied MergeTree table."""
    import chdb
    ddl = ", ".join(f"{c} {t}" for c, t in COLS)
    table = f"CREATE TABLE b ({ddl}) ENGINE = MergeTree ORDER BY id SETTINGS non_replicated_deduplication_window = 0"
    data = rowbinary(n)
    print(f"bench: {n} rows x {len(COLS)} columns RowBinary = {len(data) / 1e6:.1f} MB, median of {runs}")
    conn = chdb.connect(os.path.join(tmp, "direct"))
    conn.query(table)
    times = []
    for _ in range(runs):
        conn.query("TRUNCATE TABLE b")
        t = time.perf_counter()
        with conn.send_insert("INSERT INTO b", "RowBinary") as ins:
            ins.append(data)
            ins.finish()
        times.append(time.perf_counter() - t)
    results = {"direct chdb send_insert (in-process)": sorted(times)[runs // 2]}
    conn.close()
    f = Front(os.path.join(tmp, "bench"))
    try:
        f.q(table)
        body = b"".join(frame(part) for part in chunks(data, 1 << 20))  # what clickhouse-rs sends
        for label, params, payload in (("front, Content-Length", {}, data),
                                       ("front, chunked + decompress=1 LZ4", {"decompress": "1"}, body)):
            times = []
            for _ in range(runs):
                f.q("TRUNCATE TABLE b")
                hdrs = {"Transfer-Encoding": "chunked"} if params else {}
                t = time.perf_counter()
                st, _, b = f.req("POST", dict(params, query="INSERT INTO b FORMAT RowBinary"),
                                 chunks(payload, 1 << 20) if params else payload, hdrs)
                times.append(time.perf_counter() - t)
                check(f"bench insert ({label})", st == 200 and f.q("SELECT count() FROM b")[2] == b"%d\n" % n, b)
            results[label] = sorted(times)[runs // 2]
    finally:
        f.stop()
    for label, s in results.items():
        print(f"{label}: {n / s:,.0f} rows/s ({s:.2f} s)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="chdb_http_check_") as tmp:
        functional(tmp)
        if "--bench" in sys.argv:
            bench(tmp)
    print(f"{len(FAILURES)} failed" if FAILURES else "all checks passed")
    sys.exit(1 if FAILURES else 0)
