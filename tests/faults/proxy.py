"""The fault tests' TCP proxy now lives in tests/proxy.py (the benches use it too)."""

from tests.proxy import TcpProxy

__all__ = ["TcpProxy"]
