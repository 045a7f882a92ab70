#!/usr/bin/env python3
"""Regenerates the placeholder app icons (teal square, white cross) as 8-bit RGBA PNGs.

Tauri needs RGBA PNGs at build time. Standard library only, so no image toolchain is needed.
Run from this directory: python3 generate.py
"""
import struct
import zlib

TEAL = (0x0F, 0x76, 0x6E, 255)
WHITE = (255, 255, 255, 255)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(n: int, path: str) -> None:
    arm, half, c = n * 0.14, n * 0.30, n / 2
    rows = []
    for y in range(n):
        row = bytearray([0])  # filter type: none
        for x in range(n):
            dx, dy = abs(x + 0.5 - c), abs(y + 0.5 - c)
            cross = (dx <= arm and dy <= half) or (dy <= arm and dx <= half)
            row += bytes(WHITE if cross else TEAL)
        rows.append(bytes(row))
    ihdr = struct.pack(">IIBBBBB", n, n, 8, 6, 0, 0, 0)  # 8-bit depth, colour type 6 = RGBA
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b""))


if __name__ == "__main__":
    png(32, "32x32.png")
    png(128, "128x128.png")
    png(256, "128x128@2x.png")
    png(512, "icon.png")
