"""What `nnstep serve` lets in, decided before any process starts (docs/errors.md, "Serving a
classroom"). Plain functions of the request's headers and the server's settings, with no web
framework in sight, so that each rule is tested on its own.

- **Host** (DNS rebinding): a page that a hostile site loads under its own name, resolved to this
  machine, carries that name in its `Host` header. Only the address served, `localhost` and the
  loopback addresses are accepted; serving on every interface (0.0.0.0) also accepts an IP address
  typed as such (a rebinding attack always carries a name) and this machine's own host name.
- **Origin** (cross-site requests): a browser names the page that opened a websocket or made a
  request in `Origin`. It must be the served page's own origin, `http://<Host>`. A request without
  one (a link followed, a non-browser client) is not cross-origin; `Origin: null` (a sandboxed frame,
  a file) is refused.
- **Sec-Fetch-Site** (a page fetching ours as a resource): a cross-site request that is not a
  navigation is refused. A student following a link from the course's own page is a navigation,
  and welcome.
- **Size**: the terminal size a browser asks for is clamped (at most 400 × 150 cells).
"""
from __future__ import annotations

import ipaddress
import socket

MAX_COLUMNS, MAX_ROWS = 400, 150
MIN_COLUMNS, MIN_ROWS = 20, 5          # below this nnstep's screen has no room for a single panel
DEFAULT_SIZE = (80, 24)
DEFAULT_MAX_SESSIONS = 32
WILDCARDS = ("0.0.0.0", "::", "")


def clamp_size(width, height) -> tuple[int, int]:
    """A requested terminal size as whole cells within the limits; anything that is not a whole
    number (text, a float, a bool, None) is the default size."""
    w, h = _cells(width, DEFAULT_SIZE[0]), _cells(height, DEFAULT_SIZE[1])
    return min(max(w, MIN_COLUMNS), MAX_COLUMNS), min(max(h, MIN_ROWS), MAX_ROWS)


def _cells(v, default: int) -> int:
    if isinstance(v, bool):
        return default
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit() and len(v) <= 12:
        return int(v)
    return default


def split_host(value: str) -> tuple[str, int | None] | None:
    """``Host`` header → (lower-case host without a trailing dot or IPv6 brackets, port or None);
    None when it is not a host[:port] at all."""
    v = value.strip()
    if not v or any(c in v for c in "/\\@ \t?#"):
        return None
    port: int | None = None
    if v.startswith("["):                           # [::1]:8000
        end = v.find("]")
        if end < 0:
            return None
        host, rest = v[1:end], v[end + 1:]
        if rest:
            if not rest.startswith(":"):
                return None
            port = _port(rest[1:])
            if port is None:
                return None
    elif v.count(":") == 1:
        host, p = v.split(":")
        port = _port(p)
        if port is None:
            return None
    elif ":" in v:                                  # a bare IPv6 address is no valid Host
        return None
    else:
        host = v
    host = host.lower().rstrip(".")
    return (host, port) if host else None


def _port(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 5 and int(text) <= 65535 else None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def allowed_names(served_host: str) -> frozenset[str]:
    """The host names a request may carry when serving on ``served_host``."""
    names = {"localhost", "127.0.0.1", "::1"}
    h = served_host.strip("[]").lower().rstrip(".")
    if h not in WILDCARDS:
        names.add(h)
    else:
        for n in (socket.gethostname(), socket.getfqdn()):
            n = n.lower().rstrip(".")
            if n:
                names.update((n, n.split(".")[0] + ".local"))
    return frozenset(names)


def host_refusal(host_header: str | None, served_host: str, port: int) -> str | None:
    """Why a request with this ``Host`` header is refused, or None when it is let in."""
    if not host_header:
        return "no Host header"
    parsed = split_host(host_header)
    if parsed is None:
        return "a Host header that is not host:port"
    host, p = parsed
    if p is not None and p != port:
        return f"Host names port {p}, not the port served ({port})"
    if host in allowed_names(served_host):
        return None
    if served_host.strip("[]") in WILDCARDS and _is_ip(host):
        return None
    return (f"Host {host!r} is not the address served (use http://localhost:{port} here, or the "
            "address the teacher gave)")


def origin_refusal(origin: str | None, host_header: str, scheme: str = "http") -> str | None:
    """Why a request from the page at ``origin`` is refused, or None (same origin, or none given)."""
    if origin is None:
        return None
    if origin.strip().lower() == "null":
        return "Origin null (a sandboxed frame or a local file)"
    mine = split_host(host_header or "")
    theirs = origin.strip().lower()
    if "://" not in theirs or mine is None:
        return f"Origin {origin[:80]!r} is not this page's"
    o_scheme, o_rest = theirs.split("://", 1)
    other = split_host(o_rest)
    if other is None or o_scheme != scheme:
        return f"Origin {origin[:80]!r} is not this page's"
    default = 443 if scheme == "https" else 80
    if (other[0], other[1] or default) != (mine[0], mine[1] or default):
        return f"Origin {origin[:80]!r} is not this page's"
    return None


def fetch_refusal(site: str | None, mode: str | None) -> str | None:
    """Why a request that a browser labels ``Sec-Fetch-Site: site`` / ``Sec-Fetch-Mode: mode`` is
    refused: another site's page fetching ours as a resource (a navigation to it is welcome)."""
    if (site or "").lower() == "cross-site" and (mode or "navigate").lower() != "navigate":
        return f"a cross-site {mode} request"
    return None
