"""Errors the API returns: always JSON `{"error": code, "message": text}`."""

from __future__ import annotations


class HTTPProblem(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
