"""Headless Chromium for the HTML report: render a page, collect console messages, read the screenshot's pixels."""

from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import subprocess
import tempfile
import zlib

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
)


def chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


@dataclasses.dataclass
class Rendered:
    dom: str
    console: list[str]
    png: bytes


def render(page: str, width: int = 1280, height: int = 1600, timeout: int = 90) -> Rendered:
    """Open ``page`` (a file path) twice: once for the DOM after scripts ran and the console, once for a screenshot."""
    binary = chromium()
    url = "file://" + os.path.abspath(page)
    with tempfile.TemporaryDirectory() as profile:
        common = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
        dumped = subprocess.run(
            [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        shot = os.path.join(profile, "page.png")
        subprocess.run([*common, f"--screenshot={shot}", url], capture_output=True, timeout=timeout, check=False)
        with open(shot, "rb") as stream:
            png = stream.read()
    console = [line for line in dumped.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return Rendered(dumped.stdout, console, png)


def decode_png(data: bytes) -> tuple[int, int, int, bytes]:
    """Width, height, bytes per pixel and the raw pixel rows of an 8-bit RGB or RGBA PNG (what Chromium writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, chunks, header = 8, [], None
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        position += 12 + length
    width, height, depth, colour, _unused, _unused2, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, f"unsupported PNG: depth {depth} colour {colour}"
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    rows = bytearray()
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for index in range(stride):
            left = line[index - channels] if index >= channels else 0
            up = previous[index]
            corner = previous[index - channels] if index >= channels else 0
            if kind == 1:
                line[index] = (line[index] + left) & 0xFF
            elif kind == 2:
                line[index] = (line[index] + up) & 0xFF
            elif kind == 3:
                line[index] = (line[index] + (left + up) // 2) & 0xFF
            elif kind == 4:
                estimate = left + up - corner
                pa, pb, pc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                line[index] = (line[index] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows += line
        previous = line
    return width, height, channels, bytes(rows)


def count_colours(png: bytes, colours: dict[str, str], tolerance: int = 6) -> dict[str, int]:
    """How many pixels of the screenshot have each of the given #rrggbb colours (within ``tolerance``)."""
    _unused, _unused2, channels, pixels = decode_png(png)
    wanted = {name: tuple(int(value[i : i + 2], 16) for i in (1, 3, 5)) for name, value in colours.items()}
    counts = dict.fromkeys(colours, 0)
    for offset in range(0, len(pixels), channels):
        red, green, blue = pixels[offset], pixels[offset + 1], pixels[offset + 2]
        if red > 245 and green > 245 and blue > 245:
            continue
        for name, (r, g, b) in wanted.items():
            if abs(red - r) <= tolerance and abs(green - g) <= tolerance and abs(blue - b) <= tolerance:
                counts[name] += 1
    return counts
