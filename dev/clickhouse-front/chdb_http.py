#!/usr/bin/env python3
"""chdb_http.py -- DEV/TEST TOOL: not a ClickHouse server.

Serves the embedded ClickHouse engine (chDB, `chdb-core`) over ClickHouse's HTTP
interface so that the Rust `clickhouse` crate and curl can talk to it as to a server.
No authentication (X-ClickHouse-User/-Key, user/password params and Basic auth are
accepted and ignored), no users/roles/quotas, no row-policy enforcement, one engine
session per request (session_id is accepted and ignored, so SET/USE/temporary tables
never outlive their request), one request at a time on the engine (one lock).
Never expose it beyond localhost.

    python3 dev/clickhouse-front/chdb_http.py --host 127.0.0.1 --port 8123 --data-dir PATH

Supported: GET/HEAD /ping, / and /replicas_status; queries from `query=` and/or the
POST body (or a multipart/form-data `query` field); database=, default_format=
(+ X-ClickHouse-Database / X-ClickHouse-Format headers); every other non-reserved URL
parameter as a per-request setting; param_<name> query parameters; INSERT ... FORMAT X
/ VALUES with data in the body; request bodies chunked, Content-Encoding gzip/deflate/
lz4 and decompress=1 (native LZ4/none blocks); responses with compress=1 (native LZ4
blocks, needs clickhouse-cityhash) or, with enable_http_compression=1, Content-Encoding
gzip/deflate/lz4; ClickHouse-style errors (status, X-ClickHouse-Exception-Code, body).
"""
import argparse, gzip, json, re, signal, struct, sys, threading, time, uuid, zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import chdb
import lz4.block
import lz4.frame

try:  # ClickHouse's CityHash128 v1.0.2: only for compress=1 and checksum checks
    from clickhouse_cityhash.cityhash import CityHash128
except ImportError:  # pragma: no cover
    CityHash128 = None

# URL parameters that are not settings (as in ClickHouse's HTTPHandler).
RESERVED = {"query", "database", "default_format", "compress", "decompress", "query_id",
            "session_id", "session_timeout", "session_check", "close_session", "user",
            "password", "quota_key", "role", "stacktrace", "wait_end_of_query",
            "buffer_size", "client_protocol_version"}
STATUS_BY_NAME = {404: "UNKNOWN_TABLE UNKNOWN_FUNCTION UNKNOWN_IDENTIFIER UNKNOWN_TYPE "
                  "UNKNOWN_STORAGE UNKNOWN_DATABASE UNKNOWN_SETTING UNKNOWN_DIRECTION_OF_SORTING "
                  "UNKNOWN_AGGREGATE_FUNCTION UNKNOWN_FORMAT UNKNOWN_DATABASE_ENGINE "
                  "UNKNOWN_TYPE_OF_QUERY UNKNOWN_ROLE",
                  400: "CANNOT_PARSE_TEXT CANNOT_PARSE_ESCAPE_SEQUENCE CANNOT_PARSE_QUOTED_STRING "
                  "CANNOT_PARSE_INPUT_ASSERTION_FAILED CANNOT_PARSE_DATE CANNOT_PARSE_DATETIME "
                  "CANNOT_PARSE_NUMBER CANNOT_PARSE_UUID CANNOT_PARSE_BOOL CANNOT_PARSE_IPV4 "
                  "CANNOT_PARSE_IPV6 CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING UNKNOWN_ELEMENT_IN_AST "
                  "UNKNOWN_TYPE_OF_AST_NODE TOO_DEEP_AST TOO_BIG_AST UNEXPECTED_AST_STRUCTURE "
                  "SYNTAX_ERROR INCORRECT_DATA TYPE_MISMATCH VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE",
                  401: "AUTHENTICATION_FAILED REQUIRED_PASSWORD", 403: "ACCESS_DENIED READONLY",
                  411: "HTTP_LENGTH_REQUIRED", 413: "QUERY_IS_TOO_LARGE", 501: "NOT_IMPLEMENTED"}
STATUS = {n: s for s, names in STATUS_BY_NAME.items() for n in names.split()}
CODES = {}            # error name -> code, read from system.errors at start-up
VERSION = "26.9"      # replaced by the engine's version() at start-up
MASK64 = (1 << 64) - 1


class CHError(Exception):
    def __init__(self, name, msg, code=None):
        super().__init__(msg)
        self.name, self.msg, self.code = name, msg, code or CODES.get(name, 1001)
        self.status = STATUS.get(name, 500)

    def body(self):
        return f"Code: {self.code}. DB::Exception: {self.msg}. ({self.name}) (version {VERSION})\n"


def from_engine(exc):
    """chDB raises 'Code: N. DB::Exception: msg. (NAME)', sometimes nested or prefixed."""
    text = str(exc)
    found = list(re.finditer(r"Code: (\d+)\. DB::Exception: ", text))
    if not found:
        return CHError("STD_EXCEPTION", text.rstrip(". "))
    msg = re.sub(r" \(version [^)]*\)", "", text[found[-1].end():]).rstrip()
    tail = re.search(r"(?:\.? \(([A-Z][A-Z0-9_]*)\))+$", msg)
    name = tail.group(1) if tail else "UNKNOWN_EXCEPTION"
    return CHError(name, msg[:tail.start()] if tail else msg, int(found[-1].group(1)))


# ---- ClickHouse native compressed blocks: checksum(16) method(1) csize(4) usize(4) data --
def checksum(block):
    h = CityHash128(bytes(block))
    return struct.pack("<QQ", h >> 64, h & MASK64)


def unframe(buf, verify):
    out, mv, off = [], memoryview(buf), 0
    while off < len(buf):
        if len(buf) - off < 25:
            raise CHError("CANNOT_DECOMPRESS", "Truncated compressed block header")
        method = buf[off + 16]
        csize, usize = struct.unpack_from("<II", buf, off + 17)
        block = mv[off + 16:off + 16 + csize]
        if csize < 9 or len(block) < csize:
            raise CHError("CANNOT_DECOMPRESS", "Truncated compressed block")
        if verify and CityHash128 and checksum(block) != buf[off:off + 16]:
            raise CHError("CHECKSUM_DOESNT_MATCH", "Checksum doesn't match: corrupted data")
        if method == 0x82:
            out.append(lz4.block.decompress(block[9:], uncompressed_size=usize))
        elif method == 0x02:
            out.append(bytes(block[9:]))
        else:
            raise CHError("UNKNOWN_COMPRESSION_METHOD",
                          f"Unknown compression method: {method:#04x} (only LZ4 and NONE)")
        off += 16 + csize
    return b"".join(out)


def frame(data, block_size=1 << 20):
    if CityHash128 is None:
        raise CHError("NOT_IMPLEMENTED", "compress=1 needs the clickhouse-cityhash package")
    out = []
    for i in range(0, len(data), block_size):
        chunk = data[i:i + block_size]
        comp = lz4.block.compress(chunk, store_size=False)
        block = struct.pack("<BII", 0x82, len(comp) + 9, len(chunk)) + comp
        out += [checksum(block), block]
    return b"".join(out)


# ---- just enough SQL lexing to split statement/data and reject multi-statements ---------
TOKEN = re.compile(rb"""\s+|--[^\n]*|\#[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`|\w+|.""", re.S)


def split_query(text):
    """-> (statement, format or None, insert data or None)."""
    prev = fmt = semicolon = None
    fmt_at, depth, insert_data = 0, 0, None
    for m in TOKEN.finditer(text):
        tok = m.group()
        if tok[:1].isspace() or tok[:2] in (b"--", b"/*") or tok[:1] == b"#":
            continue
        if semicolon is not None:
            raise CHError("SYNTAX_ERROR", "Syntax error (Multi-statements are not allowed): failed at "
                          f"position {semicolon + 1}: {text[semicolon:semicolon + 60].decode(errors='replace')}")
        word = tok.upper() if (tok[:1].isalnum() or tok[:1] == b"_") else None
        if insert_data is None:  # first token
            insert_data = word == b"INSERT"
        if tok in (b"(", b"["):
            depth += 1
        elif tok in (b")", b"]"):
            depth -= 1
        elif tok == b";" and depth <= 0:
            semicolon = m.start()
        elif depth == 0 and word:
            if prev == b"FORMAT":
                fmt = tok.decode()
                if insert_data:  # data starts after the rest of the line (ClickHouse rule)
                    i = m.end()
                    while i < len(text) and text[i] in b" \t\f":
                        i += 1
                    if text[i:i + 1] == b"\r":
                        i += 1
                    if text[i:i + 1] == b"\n":
                        i += 1
                    return text[:fmt_at], fmt, text[i:]
            elif insert_data and word == b"VALUES":
                return text[:m.start()], "Values", text[m.end():]
            elif word in (b"SELECT", b"WITH"):
                insert_data = False
            if word == b"FORMAT":
                fmt_at = m.start()
        prev = word
    return (text if semicolon is None else text[:semicolon]), fmt, None


def content_type(fmt):
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        return "text/csv; charset=UTF-8; header=" + ("present" if "withnames" in f else "absent")
    if f.startswith("json") and "eachrow" in f or f in ("jsonlines", "ndjson"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f == "xml":
        return "application/xml; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "values", "tskv", "template", "raw", "line")):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def sql_string(v):
    return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Engine:
    """One chDB engine bound to one data directory, used under one lock.

    chDB keeps SET/USE state per connection, and opening a connection to the already
    running engine costs ~0.2 ms, so every request gets its own short-lived connection:
    per-request settings and database can never leak into another request."""

    def __init__(self, path):
        self.path, self.lock, self.closed = path, threading.Lock(), False
        self.anchor = chdb.connect(path)  # keeps the engine (and its data dir) open
        rows = self.anchor.query("SELECT code, name FROM system.errors SETTINGS "
                                 "system_events_show_zero_values = 1", "TSV").bytes().decode()
        CODES.update((n, int(c)) for c, n in (l.split("\t") for l in rows.splitlines()))
        info = self.anchor.query("SELECT version(), timezone()", "TSV").bytes().decode()
        global VERSION
        VERSION, self.timezone = info.strip().split("\t")

    def run(self, stmt, fmt, data, database, settings, params):
        with self.lock:
            if self.closed:
                raise CHError("ABORTED", "Server is shutting down")
            conn = chdb.connect(self.path)
            try:
                if database:
                    conn.query("USE `" + database.replace("\\", "\\\\").replace("`", "\\`") + "`")
                for k, v in settings:
                    conn.query(f"SET {k} = {sql_string(v)}")
                if data is None:
                    res = conn.query(stmt, fmt, params=params)
                    return res.bytes(), {
                        "read_rows": res.storage_rows_read(), "read_bytes": res.storage_bytes_read(),
                        "written_rows": res.rows_written(), "written_bytes": res.bytes_written(),
                        "result_rows": res.rows_read(), "result_bytes": res.bytes_read(),
                        "elapsed_ns": int(res.elapsed() * 1e9)}
                with conn.send_insert(stmt, fmt) as ins:
                    if data:
                        ins.append(data)
                    res = ins.finish()
                return b"", {"read_rows": 0, "read_bytes": 0, "written_rows": res.rows_written,
                             "written_bytes": res.bytes_written, "result_rows": 0,
                             "result_bytes": 0, "elapsed_ns": int(res.elapsed * 1e9)}
            except CHError:
                raise
            except Exception as e:  # chDB errors: RuntimeError/ChdbError with ClickHouse text
                raise from_engine(e) from None
            finally:
                conn.close()

    def close(self):
        with self.lock:
            self.closed = True
            self.anchor.close()


class Handler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK: ~40 ms on every kept-alive request.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "chdb-http-dev"
    engine: Engine = None

    def log_message(self, *args):  # replaced by one line per request in _log
        pass

    def _log(self, status, started, query=""):
        q = " ".join(query.split())[:200]
        path = urlsplit(self.path).path  # never the query string: it may hold password=
        sys.stderr.write(f"{self.command} {path} {q!r} {status} {(time.monotonic() - started) * 1000:.1f}ms\n")

    def _send(self, status, body, headers=(), head=False):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        url = urlsplit(self.path)
        if url.path in ("/ping", "/replicas_status") or (url.path == "/" and "query" not in dict(parse_qsl(url.query))):
            self._send(200, b"Ok.\n", [("Content-Type", "text/html; charset=UTF-8")], head)
            return self._log(200, time.monotonic())
        self.handle_query()

    def do_POST(self):
        self.handle_query()

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise EOFError
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                parts.append(self.rfile.read(size))
                if len(parts[-1]) < size:
                    raise EOFError
                self.rfile.readline(3)
            body = b"".join(parts)
        else:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            if len(body) < n:
                raise EOFError
        enc = self.headers.get("Content-Encoding", "").strip().lower()
        if enc in ("gzip", "x-gzip"):
            body = gzip.decompress(body)
        elif enc == "deflate":
            body = zlib.decompress(body)
        elif enc == "lz4":
            body = lz4.frame.decompress(body)
        elif enc not in ("", "identity"):
            raise CHError("UNKNOWN_COMPRESSION_METHOD", f"Unknown HTTP Content-Encoding {enc}")
        return body

    def handle_query(self):
        started, self.logged = time.monotonic(), ""
        try:
            status, body, headers = self.execute()
        except CHError as e:
            status, body = e.status, e.body().encode()
            headers = [("Content-Type", "text/plain; charset=UTF-8"), ("X-ClickHouse-Exception-Code", str(e.code))]
        except Exception as e:  # a bug in this file: still answer the way ClickHouse would
            err = CHError("STD_EXCEPTION", f"{type(e).__name__}: {e}")
            status, body, headers = 500, err.body().encode(), [("X-ClickHouse-Exception-Code", str(err.code))]
        try:
            self._send(status, body, headers, self.command == "HEAD")
        except OSError:  # client went away
            self.close_connection = True
        self._log(status, started, self.logged)

    def execute(self):
        """-> (status, body, headers); raises CHError for anything ClickHouse would refuse."""
        url = urlsplit(self.path)
        if url.path != "/":
            self.close_connection = self.command == "POST"  # its body is left unread
            return 404, (f"There is no handle {url.path}\n\nUse / or /ping for health checks.\n"
                         "Send queries with POST or GET /?query=...\n").encode(), [("Content-Type", "text/plain")]
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        self.logged = params.get("query", "")
        try:
            body = self.read_body() if self.command == "POST" else b""
        except CHError:
            raise
        except Exception as e:
            self.close_connection = True
            raise CHError("CANNOT_READ_ALL_DATA" if isinstance(e, EOFError) else "INCORRECT_DATA",
                          f"Cannot read request body: {type(e).__name__} {e}") from None
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/form-data"):
            params.update(parse_multipart(body, ctype))
            body = b""
        if params.get("decompress") in ("1", "true") and body:
            verify = params.get("http_native_compression_disable_checksumming_on_decompress", "0") in ("0", "false")
            body = unframe(body, verify)
        qp = params.get("query", "").encode()
        stmt, fmt_in_sql, data = split_query(qp + b"\n") if qp else (b"", None, None)
        if data is not None:  # INSERT ... FORMAT X in the URL: the body is the data (no copy)
            data = data + body if data else body
        elif body:  # ClickHouse reads `query` + "\n" + body as one text
            stmt, fmt_in_sql, data = split_query(qp + b"\n" + body if qp else body)
        stmt = stmt.decode(errors="replace")
        self.logged = stmt + (f" FORMAT {fmt_in_sql}" if data is not None else "")
        if not stmt.strip():
            raise CHError("SYNTAX_ERROR", "Empty query")
        fmt = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        if data is not None:
            fmt = fmt_in_sql
        elif fmt.lower() in ("arrowtable", "dataframe", "datastore"):  # chdb-only pseudo formats
            raise CHError("UNKNOWN_FORMAT", f"Unknown format {fmt}")
        settings = {k: v for k, v in params.items() if k not in RESERVED and not k.startswith("param_")}
        for k in settings:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise CHError("UNKNOWN_SETTING", f"Unknown setting '{k}'")
        if self.command != "POST":
            settings.setdefault("readonly", "2")  # as ClickHouse: GET implies readonly=2
        qparams = {k[6:]: v for k, v in params.items() if k.startswith("param_")}
        database = params.get("database") or self.headers.get("X-ClickHouse-Database")
        out, summary = self.engine.run(stmt, fmt, data, database, settings.items(), qparams)

        fmt = fmt_in_sql or fmt
        headers = [("Content-Type", content_type(fmt)), ("X-ClickHouse-Format", fmt)]
        if params.get("compress") in ("1", "true"):
            out = frame(out)
        accepted = [a.split(";")[0].strip().lower() for a in self.headers.get("Accept-Encoding", "").split(",")]
        enc = next((a for a in accepted if a in ("gzip", "deflate", "lz4")), None)
        if enc and settings.get("enable_http_compression") in ("1", "true"):
            level = int(settings.get("http_zlib_compression_level", "3"))
            out = (gzip.compress(out, level) if enc == "gzip" else
                   zlib.compress(out, level) if enc == "deflate" else lz4.frame.compress(out))
            headers.append(("Content-Encoding", enc))
        summary["total_rows_to_read"] = summary["read_rows"]
        summary = json.dumps({k: str(v) for k, v in summary.items()}, separators=(",", ":"))
        return 200, out, headers + [("X-ClickHouse-Query-Id", params.get("query_id") or str(uuid.uuid4())),
                                    ("X-ClickHouse-Timezone", self.engine.timezone),
                                    ("X-ClickHouse-Summary", summary)]


def parse_multipart(body, ctype):
    """multipart/form-data fields (query, param_*, settings) -- as the Rust crate sends them."""
    m = re.search(r'boundary="?([^";]+)"?', ctype)
    if not m:
        raise CHError("INCORRECT_DATA", "multipart/form-data without boundary")
    fields = {}
    for part in body.split(b"--" + m.group(1).encode())[1:]:
        head, sep, value = part.partition(b"\r\n\r\n")
        name = re.search(rb'name="([^"]*)"', head)
        if sep and name:
            fields[name.group(1).decode()] = value[:-2].decode() if value.endswith(b"\r\n") else value.decode()
    return fields


def main():
    ap = argparse.ArgumentParser(description="DEV/TEST ClickHouse HTTP front for chDB (not a server).")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8123)
    ap.add_argument("--data-dir", required=True, help="chDB data directory (persists across restarts)")
    args = ap.parse_args()
    Handler.engine = Engine(args.data_dir)
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    stop = lambda *_: threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"chdb_http (DEV/TEST ONLY, engine {VERSION}) on http://{args.host}:"
                     f"{srv.server_address[1]} data-dir={args.data_dir}\n")
    sys.stderr.flush()
    srv.serve_forever()
    srv.server_close()
    Handler.engine.close()
    sys.stderr.write("chdb_http: stopped, engine closed\n")


if __name__ == "__main__":
    main()
