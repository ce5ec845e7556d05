"""Local fakes of the platforms' APIs, speaking their real wire formats, for tests and demos.

Each fake is an ASGI app that records what it was sent and can produce callbacks signed the
way the platform signs them. `serve_in_thread` runs one on a free 127.0.0.1 port, so that the
platforms' official SDKs can be pointed at it through their base URL settings. `demo` puts a
clickable page on each fake for `clearance demo --fake NAME`; `email` is a local SMTP mailbox.
"""

from .server import FakeServer, serve_in_thread

__all__ = ["FakeServer", "serve_in_thread"]
