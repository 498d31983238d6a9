"""The images of a chat request: each `image_url` part read, size-capped and decoded once.

An `image_url` may be
- a data URL (`data:image/png;base64,...`), always accepted;
- a `file://` URL or an absolute path, read only from a folder in `[images] input_roots`;
- an `http(s)://` URL, fetched only with `[images] allow_remote`, only from public addresses
  (loopback, private, link-local and other special ranges are refused unless listed in
  `allowed_networks`), pinned to the address that was checked, without following redirects,
  and cut off at `max_input_bytes`.

Every file is then decoded within the pixel limits (plugins/image_files.py). Every refusal is
an `InvalidRequest` (400) naming the part (`messages[i].content[j].image_url`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import os
import socket
from urllib.parse import unquote, urlsplit

import httpx

from lampstand.plugins.errors import InvalidRequest, PathNotAllowed
from lampstand.plugins.image_files import ImageLimits, inspect_image
from lampstand.plugins.paths import confine_absolute
from lampstand.plugins.types import ImageInput

from .. import protocol as p
from ..config import ImageSettings

__all__ = ["ImageReader", "MessageImages"]

MessageImages = dict[int, tuple[ImageInput, ...]]  # message index -> its images, in order
_READ_CHUNK = 64 * 1024
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# IPv6 prefixes that carry an IPv4 address in their low 32 bits (RFC 6052 NAT64, deprecated
# IPv4-compatible): the IPv4 address is where a connection ends up, so it is what is judged.
_IPV4_IN_LOW_BITS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::/96"))
_LOCAL_NAT64 = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a site's own translator


class ImageReader:
    """Reads and checks the images of chat requests under one `[images]` configuration."""

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings
        self.limits = ImageLimits(settings.max_input_pixels, settings.max_input_side)
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allowed_networks]

    async def read_messages(self, messages: list[p.ChatMessageIn]) -> MessageImages:
        """Every image of `messages`, by message index; 400 for the first one that fails."""
        parts = [(i, j, part) for i, message in enumerate(messages) if isinstance(message.content, list)
                 for j, part in enumerate(message.content) if isinstance(part, p.ImagePart)]
        if len(parts) > self.settings.max_images_per_request:
            raise InvalidRequest(f"at most {self.settings.max_images_per_request} images may be sent in one request",
                                 param="messages")
        found: dict[int, list[ImageInput]] = {}
        for i, j, part in parts:
            param = f"messages[{i}].content[{j}].image_url"
            data = await self.read_bytes(part.image_url.url, param)
            image = await asyncio.to_thread(inspect_image, data, self.limits, param=param,
                                            detail=part.image_url.detail or "auto")
            found.setdefault(i, []).append(image)
        return {i: tuple(images) for i, images in found.items()}

    async def read_bytes(self, url: str, param: str) -> bytes:
        """The file `url` names, at most `max_input_bytes` long."""
        if url.startswith("data:"):
            return self._data_url(url, param)
        if url.startswith(("http://", "https://")):
            return await self._remote(url, param)
        if url.startswith(("file://", "/", "~")):
            return await asyncio.to_thread(self._local, url, param)
        raise InvalidRequest("image_url must be a data: URL, an http(s):// URL or a file:// URL", param=param)

    def _too_large(self, param: str) -> InvalidRequest:
        return InvalidRequest(f"the image is larger than {self.settings.max_input_bytes} bytes", param=param)

    def _data_url(self, url: str, param: str) -> bytes:
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64") or not header[5:].startswith("image/"):
            raise InvalidRequest("a data URL must look like data:image/png;base64,...", param=param)
        if len(payload) * 3 // 4 > self.settings.max_input_bytes + 3:
            raise self._too_large(param)
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest("the data URL is not valid base64", param=param) from None

    # -- local files --

    def _local(self, url: str, param: str) -> bytes:
        if url.startswith("file://"):
            parts = urlsplit(url)
            if parts.netloc not in ("", "localhost"):
                raise InvalidRequest("file:// URLs must name a local path", param=param)
            url = unquote(parts.path)
        try:
            path = confine_absolute(url, self.settings.input_roots, what="image input roots")
        except PathNotAllowed as exc:
            raise InvalidRequest(exc.message, param=param) from None
        if path.is_dir():
            raise InvalidRequest("the image path names a directory", param=param)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never block on a FIFO swapped in since the check
        with os.fdopen(fd, "rb") as file:
            data = file.read(self.settings.max_input_bytes + 1)
        if len(data) > self.settings.max_input_bytes:
            raise self._too_large(param)
        return data

    # -- remote URLs --

    async def _remote(self, url: str, param: str) -> bytes:
        if not self.settings.allow_remote:
            raise InvalidRequest("remote image URLs are disabled on this server; send a data: URL "
                                 "(or enable [images] allow_remote)", param=param)
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise InvalidRequest("the image URL has no host", param=param)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise InvalidRequest("the image URL has an invalid port", param=param) from None
        address = await self._public_address(host, port, param)
        target = parts._replace(netloc=_netloc(address, port)).geturl()
        headers = {"Host": parts.netloc.rpartition("@")[2], "Accept": "image/*"}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        timeout = httpx.Timeout(self.settings.fetch_timeout)
        try:
            async with asyncio.timeout(self.settings.fetch_timeout), \
                    httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout) as client, \
                    client.stream("GET", target, headers=headers, extensions=extensions) as response:
                return await self._body(response, param)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            raise InvalidRequest(f"the image could not be fetched: {type(exc).__name__}", param=param) from None

    async def _body(self, response: httpx.Response, param: str) -> bytes:
        if response.is_redirect:
            raise InvalidRequest("the image URL redirects; redirects are not followed", param=param)
        if response.status_code != 200:
            raise InvalidRequest(f"fetching the image answered HTTP {response.status_code}", param=param)
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_input_bytes:
            raise self._too_large(param)
        data = bytearray()
        async for chunk in response.aiter_bytes(_READ_CHUNK):
            data += chunk
            if len(data) > self.settings.max_input_bytes:
                raise self._too_large(param)
        return bytes(data)

    async def _public_address(self, host: str, port: int, param: str) -> IPAddress:
        """The address to connect to: every address `host` resolves to must be allowed."""
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise InvalidRequest("the image URL's host does not resolve", param=param) from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
        refused = [a for a in addresses if not self._allowed(a)]
        if refused or not addresses:
            raise InvalidRequest("the image URL points to a loopback, private, link-local or otherwise "
                                 "non-public address, which is not fetched", param=param)
        return addresses[0]

    def _allowed(self, address: IPAddress) -> bool:
        if any(address in network for network in self._networks):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            if address in _LOCAL_NAT64:
                return False
            carried = embedded_ipv4(address)
            if carried is not None:
                return self._allowed(carried)
        return address.is_global and not address.is_multicast


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches through a mapping, translation or tunnel prefix
    (`::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo, `::a.b.c.d`), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in _IPV4_IN_LOW_BITS):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _netloc(address: IPAddress, port: int) -> str:
    return f"[{address}]:{port}" if isinstance(address, ipaddress.IPv6Address) else f"{address}:{port}"
