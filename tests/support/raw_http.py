#!/usr/bin/env python3
"""Hostile HTTP clients for the black-box server tests (tests/support/http_test.sh): raw bytes
over real sockets, with nothing of an HTTP library in between.

  raw_http.py send PORT           sends stdin's bytes, prints what the server answers until it
                                  closes (at most 10 s)
  raw_http.py trailers PORT N MB  N connections at once, each sending a chunked request whose
                                  trailer grows to MB MiB; prints how many got a 431
  raw_http.py flood PORT N        opens N connections at once and keeps them open; prints how
                                  many were answered 503 within 5 s, then how many got no
                                  answer (still held by the server) before closing them all
"""
import selectors
import socket
import sys
import threading
import time


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.settimeout(10)
    return s


def read_all(s):
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
    except OSError:
        pass
    return out


def send(port):
    s = connect(port)
    try:
        s.sendall(sys.stdin.buffer.read())
    except OSError:
        pass  # the server may answer and close before reading everything
    sys.stdout.buffer.write(read_all(s))
    s.close()


def trailers(port, n, mib):
    got = []

    def one():
        s = connect(port)
        try:
            s.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2\r\n{}\r\n0\r\n")
            line = b"X-Trailer: " + b"v" * 1000 + b"\r\n"
            for _ in range(mib * 1024):
                s.sendall(line)
        except OSError:
            pass  # refused and closed: what should happen
        got.append(read_all(s).startswith(b"HTTP/1.1 431 "))
        s.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(got))


def flood(port, n):
    socks = [connect(port) for _ in range(n)]
    answers = {}
    deadline = time.monotonic() + 5
    with selectors.DefaultSelector() as sel:
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        while len(answers) < n and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                try:
                    answers[key.fileobj] = key.fileobj.recv(4096)
                except OSError:
                    answers[key.fileobj] = b""
                sel.unregister(key.fileobj)
            if len(answers) >= n or any(a.startswith(b"HTTP/1.1 503 ") for a in answers.values()):
                # the first 503s are in: give the rest a moment, then count
                deadline = min(deadline, time.monotonic() + 0.5)
    refused = sum(1 for a in answers.values() if a.startswith(b"HTTP/1.1 503 "))
    print(refused, n - len(answers))
    for s in socks:
        s.close()


if __name__ == "__main__":
    cmd, port = sys.argv[1], int(sys.argv[2])
    if cmd == "send":
        send(port)
    elif cmd == "trailers":
        trailers(port, int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "flood":
        flood(port, int(sys.argv[3]))
    else:
        sys.exit("unknown command " + cmd)
