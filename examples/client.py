#!/usr/bin/env python3
"""A stdlib-only client of warden's control socket (JSON-RPC 2.0, one JSON object per line).

Usage: python3 examples/client.py SOCKET_PATH USER
Lists USER's tools, calls the first server's `whoami` tool, and shows a typed error.
"""
import itertools
import json
import socket
import sys


class Warden:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.lines = self.sock.makefile("r", encoding="utf-8")
        self.ids = itertools.count(1)

    def call(self, method, **params):
        request_id = next(self.ids)
        request = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.sock.sendall((json.dumps(request) + "\n").encode("utf-8"))
        response = json.loads(self.lines.readline())
        assert response["id"] == request_id, response
        if "error" in response:
            error = response["error"]
            raise RuntimeError(f'{error["data"]["kind"]}: {error["message"]}')
        return response["result"]


def main():
    path, user = sys.argv[1], sys.argv[2]
    warden = Warden(path)
    tools = warden.call("tools.list", user=user)["tools"]
    for tool in tools:
        print(f'{tool["server"]}/{tool["name"]}')
    server = tools[0]["server"]
    result = warden.call("tools.call", user=user, server=server, tool="whoami")
    print("whoami ->", result["content"][0]["text"])
    try:
        warden.call("tools.list", user="nobody")
    except RuntimeError as error:
        print("expected error:", error)


if __name__ == "__main__":
    main()
