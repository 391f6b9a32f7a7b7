"""Scene sources: the CC0 panoramas of Debian's ``blender-data``, user HDR images, procedural content.

The panoramas are eight 1024x512 equirectangular EXRs (``studiolights/world/*.exr``, CC0, up to
3e4 dynamic range). They are fetched on demand (never committed) with ``apt-get download`` and
unpacked with ``dpkg -x``. Any other EXR / Radiance ``.hdr`` image or folder of EXR frames can be
used as a source too: a 2:1 image is treated as an equirectangular panorama, anything else (and
every sequence) as a flat plate.

Convention: images are ``(H, W, 3)`` float32 linear radiance, non-negative.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vs_hdrvid.ops.exr import read_exr

__all__ = ["BLENDER_PANORAMAS", "fetch_panoramas", "read_hdr_image", "Source", "find_sources",
           "resolve_source", "procedural_panorama", "procedural_texture", "TEXTURE_FAMILIES"]

#: The eight CC0 panoramas of ``blender-data`` (``usr/share/blender/datafiles/studiolights/world``).
BLENDER_PANORAMAS = ("city", "courtyard", "forest", "interior", "night", "studio", "sunrise", "sunset")
_DEB_WORLD = "usr/share/blender/datafiles/studiolights/world"
_IMAGE_EXT = (".exr", ".hdr")


def fetch_panoramas(dest: str | os.PathLike = "data/panoramas") -> list[Path]:
    """Download the eight ``blender-data`` panoramas into ``dest`` (idempotent).

    Runs ``apt-get download blender-data`` in a temporary folder, unpacks the package with
    ``dpkg -x`` (or a pure-Python ``ar``/``tar`` reader where ``dpkg`` is missing) and copies
    ``studiolights/world/*.exr`` and the licence file. Nothing is installed.

    Returns:
        The sorted paths of the eight EXR files.

    Raises:
        RuntimeError: ``apt-get`` is unavailable or the download fails (the message says how to get
            the files by hand).
    """
    dest = Path(dest)
    want = [dest / f"{n}.exr" for n in BLENDER_PANORAMAS]
    if all(p.is_file() for p in want):
        return want
    if shutil.which("apt-get") is None:
        raise RuntimeError("fetch_panoramas: apt-get is not available; on a Debian/Ubuntu machine run "
                           "`apt-get download blender-data && dpkg -x blender-data_*.deb x` and copy "
                           f"x/{_DEB_WORLD}/*.exr into {dest}")
    with tempfile.TemporaryDirectory(prefix="hdrvid-blender-") as tmp:
        r = subprocess.run(["apt-get", "download", "blender-data"], cwd=tmp, capture_output=True, text=True)
        debs = sorted(Path(tmp).glob("blender-data_*.deb"))
        if r.returncode != 0 or not debs:
            raise RuntimeError(f"fetch_panoramas: `apt-get download blender-data` failed "
                               f"(exit {r.returncode}): {r.stderr.strip()[-300:]}; try `apt-get update` first")
        out = Path(tmp) / "x"
        _extract_deb(debs[0], out)
        world = out / _DEB_WORLD
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(world.iterdir()):
            if f.suffix in (".exr", ".txt"):
                shutil.copyfile(f, dest / (f.name + ".part"))
                os.replace(dest / (f.name + ".part"), dest / f.name)
    missing = [p.name for p in want if not p.is_file()]
    if missing:
        raise RuntimeError(f"fetch_panoramas: blender-data lacks {missing}")
    return want


def _extract_deb(deb: Path, out: Path) -> None:
    """Unpack a ``.deb`` with ``dpkg -x``, or read its ``ar`` container directly."""
    if shutil.which("dpkg") is not None:
        subprocess.run(["dpkg", "-x", str(deb), str(out)], check=True, capture_output=True)
        return
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise RuntimeError(f"{deb}: not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        name = data[pos:pos + 16].decode().strip().rstrip("/")
        size = int(data[pos + 48:pos + 58].decode().strip())
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data[pos + 60:pos + 60 + size])) as tf:
                tf.extractall(out, filter="data")
            return
        pos += 60 + size + (size & 1)
    raise RuntimeError(f"{deb}: no data.tar member")


def read_hdr_image(path: str | os.PathLike) -> np.ndarray:
    """Read an EXR or Radiance RGBE ``.hdr`` file as ``(H, W, 3)`` float32, clamped at 0.

    Raises:
        OSError: unreadable file or unsupported format.
    """
    path = Path(path)
    if path.suffix.lower() == ".exr":
        img = read_exr(path)
    elif path.suffix.lower() == ".hdr":
        img = _read_rgbe(path)
    else:
        raise OSError(f"{path}: not an .exr or .hdr image")
    return np.maximum(np.nan_to_num(img, nan=0.0, posinf=6e4), 0.0).astype(np.float32)


def _read_rgbe(path: Path) -> np.ndarray:
    """Radiance ``.hdr`` (RGBE, flat or new-style run-length encoded, ``-Y H +X W`` orientation)."""
    raw = path.read_bytes()
    end = raw.find(b"\n\n")
    if not raw.startswith(b"#?") or end < 0:
        raise OSError(f"{path}: not a Radiance HDR file")
    nl = raw.index(b"\n", end + 2)
    m = re.match(rb"-Y (\d+) \+X (\d+)", raw[end + 2:nl])
    if not m:
        raise OSError(f"{path}: unsupported orientation {raw[end + 2:nl]!r}")
    h, w = int(m.group(1)), int(m.group(2))
    buf, pos = np.frombuffer(raw, np.uint8), nl + 1
    rgbe = np.empty((h, w, 4), np.uint8)
    for y in range(h):
        if 8 <= w < 32768 and buf[pos] == 2 and buf[pos + 1] == 2 and not buf[pos + 2] & 0x80:
            pos += 4
            for c in range(4):
                x = 0
                while x < w:
                    n = int(buf[pos])
                    if n > 128:
                        rgbe[y, x:x + n - 128, c] = buf[pos + 1]
                        x, pos = x + n - 128, pos + 2
                    else:
                        rgbe[y, x:x + n, c] = buf[pos + 1:pos + 1 + n]
                        x, pos = x + n, pos + 1 + n
        else:
            rgbe[y] = buf[pos:pos + 4 * w].reshape(w, 4)
            pos += 4 * w
    e = rgbe[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0)
    return (rgbe[..., :3] * scale[..., None]).astype(np.float32)


@dataclass(frozen=True)
class Source:
    """A background source: ``kind`` is ``"pano"`` (equirectangular), ``"plate"`` or ``"sequence"``."""

    name: str
    kind: str
    paths: tuple[Path, ...] = ()
    proc_seed: int | None = None

    def load(self) -> list[np.ndarray]:
        """Frames of the source (one for images); procedural panoramas are synthesised."""
        if self.proc_seed is not None:
            return [procedural_panorama(self.proc_seed)]
        return [read_hdr_image(p) for p in self.paths]


def _classify(path: Path) -> Source | None:
    if path.is_dir():
        frames = tuple(sorted(p for p in path.iterdir() if p.suffix.lower() == ".exr"))
        return Source(path.name, "sequence", frames) if len(frames) >= 2 else None
    if path.suffix.lower() not in _IMAGE_EXT:
        return None
    img = read_hdr_image(path)
    kind = "pano" if img.shape[1] == 2 * img.shape[0] else "plate"
    return Source(path.stem, kind, (path,))


def find_sources(folder: str | os.PathLike) -> dict[str, Source]:
    """All usable sources in ``folder``: ``.exr``/``.hdr`` images and sub-folders of EXR frames."""
    folder = Path(folder)
    if not folder.is_dir():
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        s = _classify(p)
        if s is not None:
            out[s.name] = s
    return out


def resolve_source(name: str, folder: str | os.PathLike | None) -> Source:
    """Look up a source by name: ``"proc:<seed>"`` is a procedural panorama, anything else a file.

    Raises:
        FileNotFoundError: the named panorama is missing (with the command that fetches it).
    """
    if name.startswith("proc:"):
        return Source(name, "pano", (), int(name.split(":", 1)[1]))
    p = Path(name)
    if p.exists():
        s = _classify(p)
        if s is not None:
            return s
    if folder is not None:
        for ext in (".exr", ".hdr", ""):
            cand = Path(folder) / f"{name}{ext}"
            if cand.exists() and (s := _classify(cand)) is not None:
                return s
    raise FileNotFoundError(f"synth: source {name!r} not found in {folder}; run "
                            "`vs-hdrvid synth --fetch-panoramas` or pass --panoramas DIR")


def _fbm(rng: np.random.Generator, h: int, w: int, octaves: int = 5, wrap_x: bool = False) -> np.ndarray:
    """Fractal value noise in [0, 1], ``(h, w)``; periodic in x when ``wrap_x``."""
    out = np.zeros((h, w), np.float64)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        gh, gw = 2 + 2 ** o, 2 ** (o + 2)
        grid = rng.random((gh, gw + (0 if wrap_x else 1)))
        if wrap_x:
            grid = np.concatenate([grid, grid[:, :1]], axis=1)
        ys = np.linspace(0, gh - 1, h)
        xs = np.linspace(0, grid.shape[1] - 1, w, endpoint=not wrap_x)
        y0 = np.minimum(ys.astype(int), gh - 2)
        x0 = np.minimum(xs.astype(int), grid.shape[1] - 2)
        fy = (ys - y0)[:, None]
        fx = (xs - x0)[None, :]
        fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
        g = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
        g2 = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
        out += amp * (g * (1 - fy) + g2 * fy)
        total += amp
        amp *= 0.55
    return out / total


def procedural_panorama(seed: int, width: int = 512) -> np.ndarray:
    """A smooth synthetic HDR equirectangular panorama ``(width // 2, width, 3)``.

    Sky gradient with fractal clouds, a sun (peak ~2e4), a textured ground and a row of lit windows,
    so tests need no download. Periodic in longitude.
    """
    rng = np.random.default_rng(seed)
    h = width // 2
    lat = (np.arange(h) + 0.5) / h * np.pi - np.pi / 2          # -pi/2 (up) .. pi/2 (down)
    lon = (np.arange(width) + 0.5) / width * 2 * np.pi - np.pi
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    sky_col = np.array([0.35, 0.55, 1.0]) * rng.uniform(0.6, 1.5)
    ground_col = rng.uniform(0.1, 0.5, 3)
    clouds = _fbm(rng, h, width, 6, wrap_x=True)
    ground_tex = _fbm(rng, h, width, 6, wrap_x=True)
    up = np.clip(-la / (np.pi / 2), 0, 1)[..., None]
    sky = sky_col * (0.3 + 0.7 * up) + 0.6 * clouds[..., None] ** 2
    ground = ground_col * (0.2 + 0.8 * ground_tex[..., None])
    horizon = 1 / (1 + np.exp(la / 0.03))[..., None]
    img = sky * horizon + ground * (1 - horizon)
    s_lon, s_lat = rng.uniform(-np.pi, np.pi), rng.uniform(-0.8, -0.2)
    cosang = np.sin(la) * np.sin(s_lat) + np.cos(la) * np.cos(s_lat) * np.cos(lo - s_lon)
    ang = np.arccos(np.clip(cosang, -1, 1))
    img = img + (2e4 * np.exp(-(ang / 0.02) ** 2) + 3.0 * np.exp(-(ang / 0.3) ** 2))[..., None] * [1, 0.9, 0.7]
    for _ in range(12):
        x0, y0 = rng.uniform(-np.pi, np.pi), rng.uniform(0.02, 0.25)
        win = (np.abs(np.angle(np.exp(1j * (lo - x0)))) < 0.04) & (np.abs(la - y0) < 0.03)
        img[win] = rng.uniform(5, 60) * np.array([1.0, 0.8, 0.5])
    return img.astype(np.float32)


TEXTURE_FAMILIES = ("fbm", "checker", "stripes", "dots", "gradient")


def procedural_texture(family: str, seed: int, size: int = 128) -> np.ndarray:
    """A reflectance-like texture ``(size, size, 3)`` in (0, 1] from a family and a seed."""
    rng = np.random.default_rng(seed)
    c0, c1 = rng.uniform(0.02, 1.0, 3), rng.uniform(0.02, 1.0, 3)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    n = _fbm(rng, size, size, 5)
    if family == "fbm":
        t = n
    elif family == "checker":
        k = rng.integers(3, 9)
        a = rng.uniform(0, np.pi)
        u, v = xx * np.cos(a) - yy * np.sin(a), xx * np.sin(a) + yy * np.cos(a)
        t = ((np.floor(u * k) + np.floor(v * k)) % 2) * 0.8 + 0.2 * n
    elif family == "stripes":
        k, a = rng.uniform(3, 12), rng.uniform(0, np.pi)
        t = 0.5 + 0.5 * np.sin(k * np.pi * (xx * np.cos(a) + yy * np.sin(a)) + 4 * n)
    elif family == "dots":
        k = rng.integers(3, 8)
        fx, fy = (xx + 1) * k / 2 % 1 - 0.5, (yy + 1) * k / 2 % 1 - 0.5
        t = ((fx ** 2 + fy ** 2) < rng.uniform(0.04, 0.16)).astype(np.float64) * 0.85 + 0.15 * n
    elif family == "gradient":
        a = rng.uniform(0, 2 * np.pi)
        t = np.clip(0.5 + 0.5 * (xx * np.cos(a) + yy * np.sin(a)), 0, 1) * 0.7 + 0.3 * n
    else:
        raise ValueError(f"procedural_texture: unknown family {family!r}; use one of {TEXTURE_FAMILIES}")
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    return np.clip(img, 0.01, 1.0).astype(np.float32)
