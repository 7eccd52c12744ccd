"""The gateway's HTTP client for model services: pooled keep-alive connections (aiohttp).

aiohttp's client costs a fraction of httpx's per request, and here it is paid on every
prediction that crosses the gateway.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from yarl import URL


class UpstreamTimeout(Exception):
    pass


class UpstreamUnavailable(Exception):
    """No answer: the connection was refused, reset or closed before a response."""


@dataclass(slots=True)
class UpstreamReply:
    status_code: int
    headers: dict[str, str]
    content: bytes


class UpstreamClient:
    def __init__(self, timeout: float) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=3)
        self._session: aiohttp.ClientSession | None = None

    def _get(self) -> aiohttp.ClientSession:
        if self._session is None:  # created on first use, inside the running event loop
            # A short DNS cache: a model container restarted by Docker may come back with another address.
            connector = aiohttp.TCPConnector(limit=512, ttl_dns_cache=1, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout, auto_decompress=False,
                                                  skip_auto_headers=("User-Agent", "Accept-Encoding"))
        return self._session

    async def request(self, method: str, url: str, body: bytes, headers: list[tuple[str, str]]) -> UpstreamReply:
        try:
            async with self._get().request(method, URL(url, encoded=True), data=body or None, headers=headers,
                                           allow_redirects=False) as response:
                content = await response.read()
                return UpstreamReply(response.status, {k.lower(): v for k, v in response.headers.items()}, content)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailable(type(e).__name__) from None

    async def status(self, url: str, timeout: float) -> int | None:
        try:
            async with self._get().get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError):
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
