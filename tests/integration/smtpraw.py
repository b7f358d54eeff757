"""A raw SMTP client for tests that must send what smtplib refuses to send."""

from __future__ import annotations

import socket


class RawSmtp:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed by server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> str:
        """One whole (possibly multi-line) reply as text, lines joined by LF."""
        lines = []
        while True:
            line = self.line().decode("utf-8", "surrogateescape")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, text: str) -> str:
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def start_data(self, mail_from: str = "a@b", rcpt_to: str = "c@d", *, ehlo: bool = True) -> None:
        """Read the greeting (with ehlo) and go as far as the 354 of DATA."""
        if ehlo:
            assert self.reply().startswith("220 ")
            assert self.cmd("EHLO me").startswith("250")
        assert self.cmd(f"MAIL FROM:<{mail_from}>").startswith("250 ")
        assert self.cmd(f"RCPT TO:<{rcpt_to}>").startswith("250 ")
        assert self.cmd("DATA").startswith("354 ")

    def closed(self) -> bool:
        """True if the server has closed the connection (reads to EOF)."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawSmtp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
