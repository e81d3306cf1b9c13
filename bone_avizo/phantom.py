"""A seeded synthetic micro-CT bone phantom with exact Bone-Pores labels.

The phantom is a piece of long bone standing along z in an embedding medium, as in a typical
ex-vivo micro-CT scan:

- cortical shell: an elliptical tube whose centre, radii, outline and thickness wobble smoothly
  along z and around the circumference; it flares and thins towards both ends (metaphyses);
- trabecular network: plates where a band-passed random field crosses zero, restricted to the
  marrow cavity and densest near the ends;
- vascular canals (class "pores"): tubes running roughly along z inside the cortex, always
  enclosed by at least one voxel of bone towards the outside;
- marrow in the cavity, embedding medium around the bone with air bubbles, air outside a
  cylindrical container;
- CT effects applied to the grey values only: partial-volume blur (Gaussian), beam-hardening
  cupping (darker towards the rotation axis), ring artifacts (concentric around the rotation
  axis) and signal-dependent Gaussian noise (an approximation of Poisson noise).

Labels are BONe's Bone-Pores classes, uint8: 0 background, 1 bone, 2 pores. Class 0 holds
everything that is not bone tissue or an intracortical pore: air, embedding medium, bubbles
*and marrow* (the marrow cavity is not porosity of the bone tissue at this scale). Class 2 holds
only the vascular canals inside the cortex.

The bone scales with the field of view (it fills about the same part of the cross-section at
any size) while the trabecular spacing (at most 10 voxels) and the canal radii (1-3.5 voxels)
are capped in voxels, as fine structures are near the resolution of real scans; the otherwise
unused ``voxel_size_mm`` is metadata written with the volumes. z is unbounded: the bone is a
piece of shaft with a metaphysis at each end of the volume. Every
random quantity is drawn from generators seeded by (seed, purpose, global index) -- lattice
plane, z block, slice -- never from the position of a slab, so :func:`write_phantom` streams
slab by slab (each slab generated with a halo for the blur) and gives the same bytes as
:func:`make_phantom`.

With the defaults a global Otsu threshold on the image is good but not perfect against the
labels, so learned models have room to beat the classical pipeline: bone IoU 0.83-0.88 for
64x256x256 (seeds 0-4), 0.76-0.80 for 32x128x128, 0.90 for 32x512x512 (fine trabeculae and
canals have a fixed size in voxels, so small fields of view are harder). Generation takes
about 0.3 s for 64x256x256 and 0.03 s for 32x64x64 on one core; memory stays at a few
slabs' worth whatever the size.

Arrays are (z, y, x).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np

from bone_avizo.config import ConfigBase, Param, param
from bone_avizo.errors import ConfigError, OutputWriteError
from bone_avizo.progress import ProgressCallback, ProgressTracker
from bone_avizo.volume import Volume, VolumeInfo

__all__ = ["PhantomConfig", "PHANTOM_SPEC", "CLASS_NAMES", "make_phantom", "write_phantom", "phantom_slab"]

log = logging.getLogger(__name__)

CLASS_NAMES = ("background", "bone", "pores")
DTYPES = ("uint8", "uint16", "float32")

# materials (internal); label and grey value of each
AIR, EMBEDDING, BUBBLE, MARROW, PORE, CORTEX, TRABECULA = range(7)
MATERIAL_LABEL = np.array([0, 0, 0, 0, 2, 1, 1], np.uint8)
MATERIAL_GREY = np.array([0.01, 0.09, 0.01, 0.12, 0.11, 0.74, 0.66], np.float32)
BONE_GREY = float(MATERIAL_GREY[CORTEX])
CONTRAST = float(MATERIAL_GREY[CORTEX] - MATERIAL_GREY[EMBEDDING])
DTYPE_SCALE = {"uint8": 255.0, "uint16": 65535.0, "float32": 1.0}

# purposes of the seeded generators
_GLOBAL, _LATTICE, _CANALS, _BUBBLES, _NOISE, _RINGS = range(6)
_BLOCK_OFFSET = 16  # z blocks start at -_BLOCK_OFFSET + 1 at the lowest; seeds must be >= 0
_TRUNCATE = 4.0  # Gaussian kernel radius in sigmas (scipy's default)
_CHUNK_VOXELS = 1 << 20  # geometry is computed in chunks of about this many voxels


@dataclass(frozen=True)
class PhantomConfig(ConfigBase):
    """Options of the synthetic bone phantom (frozen). shape is (z, y, x) in voxels."""

    shape: tuple[int, ...] = param((64, 256, 256), "phantom size in voxels (z, y, x); y and x at least 16", min=1,
                                   max=1_000_000, group="geometry")
    seed: int = param(0, "random seed: the same seed gives the same bytes", min=0, max=2**63 - 1,
                      group="geometry")
    voxel_size_mm: float = param(0.02, "isotropic voxel size written with the volumes (metadata only)", min=1e-9,
                                 max=1e6, group="geometry")
    cortical_thickness: tuple[float, ...] = param((0.15, 0.35),
                                                  "thinnest and thickest cortex as fractions of the outer radius",
                                                  min=0.05, max=0.8, group="geometry")
    trabecular_density: float = param(0.25,
                                      "bone volume fraction of the trabecular network at the ends of the bone",
                                      min=0.0, max=0.7, group="geometry")
    pore_density: float = param(0.04, "fraction of the cortex taken by vascular canals", min=0.0, max=0.3,
                                group="geometry")
    bubble_density: float = param(0.1, "fraction of the embedding medium taken by air bubbles", min=0.0, max=0.5,
                                  group="geometry")
    noise: float = param(0.12,
                         "noise standard deviation at bone grey level, relative to the bone-embedding contrast",
                         min=0.0, max=2.0, group="ct effects")
    blur_sigma: float = param(1.0, "partial-volume blur: Gaussian sigma in voxels", min=0.0, max=8.0,
                              group="ct effects")
    cupping: float = param(0.25, "beam-hardening cupping: relative darkening at the rotation axis", min=0.0,
                           max=0.9, group="ct effects")
    ring_strength: float = param(0.08, "ring artifact amplitude relative to the bone-embedding contrast", min=0.0,
                                 max=2.0, group="ct effects")
    dtype: str = param("uint8", "grey value type: uint8/uint16 span 0..max, float32 is about 0..1",
                       choices=DTYPES, group="output")

    def validate(self) -> None:
        if len(self.shape) != 3:
            raise ConfigError(f"shape (--shape): give 3 sizes (z, y, x), got {len(self.shape)}: {self.shape}")
        if min(self.shape[1:]) < 16:
            raise ConfigError(f"shape (--shape): y and x must be at least 16 voxels, got {self.shape}")
        thick = self.cortical_thickness
        if len(thick) != 2 or thick[0] > thick[1]:
            raise ConfigError(f"cortical_thickness (--cortical-thickness): give MIN MAX with MIN <= MAX, "
                              f"got {thick}")


PHANTOM_SPEC: tuple[Param, ...] = PhantomConfig.SPEC


# ---------------------------------------------------------------------------------------------
# seeded randomness
def _rng(config, purpose: int, *index: int) -> np.random.Generator:
    return np.random.default_rng([config.seed, purpose, *index])


def _halo(config) -> int:
    return int(_TRUNCATE * config.blur_sigma + 0.5) if config.blur_sigma > 0 else 0


# ---------------------------------------------------------------------------------------------
# global geometry, drawn once per config
@dataclass(frozen=True)
class _Geometry:
    nz: int
    ny: int
    nx: int
    half: float  # half of the smaller cross-section side, the length unit of the geometry
    centre: tuple[float, float]  # rotation axis (y, x)
    container: float  # radius of the embedding cylinder
    radius: float  # mean outer radius of the bone
    ellipticity: float
    swap_axes: bool
    wobble: np.ndarray  # (4, 2): amplitude, period, phase for the z-dependent terms
    outline: np.ndarray  # 4 coefficients of harmonics 2 and 3 of the outline
    thick_harm: np.ndarray  # 4 coefficients of harmonics 1 and 2 of the thickness
    thick_phase: float
    end_length: float  # decay length of the metaphysis weight
    lattice: float  # spacing of the coarse lattice of the trabecular field
    lattice_offsets: np.ndarray  # (2 octaves, 3 axes)
    canal_radius: tuple[float, float]
    canals_per_block: float
    bubble_radius: tuple[float, float]
    bubbles_per_block: float
    block: int  # height of the z blocks that own canals and bubbles


@functools.lru_cache(maxsize=16)
def _geometry(config) -> _Geometry:
    nz, ny, nx = config.shape
    rng = _rng(config, _GLOBAL)
    half = min(ny, nx) / 2.0
    radius = 0.5 * half
    tmean = radius * 0.5 * sum(config.cortical_thickness)
    canal_radius = (float(np.clip(0.08 * tmean, 1.0, 2.0)), float(np.clip(0.14 * tmean, 1.3, 3.5)))
    block = max(16, int(round(2 * half)))
    container = 0.96 * half
    bubble_radius = (max(1.0, 0.02 * half), max(1.6, 0.06 * half))
    return _Geometry(
        nz=nz, ny=ny, nx=nx, half=half, centre=((ny - 1) / 2.0, (nx - 1) / 2.0), container=container,
        radius=radius, ellipticity=rng.uniform(0.04, 0.16), swap_axes=bool(rng.integers(2)),
        wobble=np.stack([rng.uniform(4, 9, 4) * half, rng.uniform(0, 2 * np.pi, 4)]),
        outline=rng.uniform(-0.04, 0.04, 4), thick_harm=rng.uniform(-1, 1, 4),
        thick_phase=rng.uniform(0, 2 * np.pi), end_length=0.8 * half,
        lattice=float(np.clip(half / 9.0, 3.0, 10.0)),
        lattice_offsets=rng.uniform(0, 1, (2, 3)), canal_radius=canal_radius,
        canals_per_block=_canals_per_block(config, radius, tmean, canal_radius),
        bubble_radius=bubble_radius,
        bubbles_per_block=_bubbles_per_block(config, container, radius, bubble_radius, block),
        block=block)


def _canals_per_block(config, radius: float, tmean: float, canal_radius) -> float:
    """Canals owned by a z block (length 2 blocks on average) for the requested porosity."""
    cortex_area = 2 * np.pi * (radius - tmean / 2) * tmean
    mean_area = np.pi * np.mean(np.square(np.linspace(*canal_radius, 9)))
    if config.pore_density <= 0:
        return 0.0
    return max(2.0, config.pore_density * cortex_area / mean_area / 2.0)  # at least a few canals


def _bubbles_per_block(config, container: float, radius: float, bubble_radius, block: int) -> float:
    embedding_volume = np.pi * (container**2 - (1.2 * radius) ** 2) * block
    mean_volume = 4 / 3 * np.pi * np.mean(np.linspace(*bubble_radius, 9) ** 3)
    return config.bubble_density * embedding_volume / mean_volume


# ---------------------------------------------------------------------------------------------
# z profiles (per slice scalars)
@dataclass(frozen=True)
class _Slices:
    """Per-slice geometry for slices z (all arrays of shape (n,), float64)."""

    z: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    ry: np.ndarray
    rx: np.ndarray
    ends: np.ndarray  # metaphysis weight, 1 at the ends, decaying towards mid-shaft
    thick_mean: np.ndarray  # mean relative cortical thickness
    band: np.ndarray  # half width of the trabecular band of the unit random field


def _slices(config, geo: _Geometry, z0: int, z1: int) -> _Slices:
    z = np.arange(z0, z1, dtype=np.float64)
    period, phase = geo.wobble
    wave = [np.sin(2 * np.pi * z / period[i] + phase[i]) for i in range(4)]
    ends = np.exp(-np.minimum(z, geo.nz - 1 - z) / geo.end_length)
    shift = 0.05 * geo.half
    radius = geo.radius * (1 + 0.06 * wave[2]) * (1 + 0.22 * ends)
    ecc = geo.ellipticity * (1 + 0.3 * wave[3])
    ry, rx = radius * (1 + ecc), radius * (1 - ecc)
    if geo.swap_axes:
        ry, rx = rx, ry
    tmin, tmax = config.cortical_thickness
    thick = (tmin + tmax) / 2 + (tmax - tmin) * 0.15 * np.sin(2 * np.pi * z / period[0] + geo.thick_phase)
    density = config.trabecular_density * (0.15 + 0.85 * ends)
    band = np.array([NormalDist().inv_cdf(0.5 + d / 2) if d > 0 else -1.0 for d in density])
    return _Slices(z=z, cy=geo.centre[0] + shift * wave[0], cx=geo.centre[1] + shift * wave[1], ry=ry, rx=rx,
                   ends=ends, thick_mean=thick * (1 - 0.4 * ends), band=band)


def _outline(geo: _Geometry, c, s):
    """Outer radius factor and relative thickness modulation at angle (cos, sin): arrays or scalars."""
    c2, s2 = c * c - s * s, 2 * c * s
    c3, s3 = c * c2 - s * s2, s * c2 + c * s2
    a, h = geo.outline, geo.thick_harm
    outer = 1 + a[0] * c2 + a[1] * s2 + a[2] * c3 + a[3] * s3
    modulation = 0.6 * (h[0] * c + h[1] * s) + 0.4 * (h[2] * c2 + h[3] * s2)
    return outer, modulation


def _thickness(config, mean, modulation):
    tmin, tmax = config.cortical_thickness
    return np.clip(mean + (tmax - tmin) * 0.5 * modulation, tmin * 0.6, tmax)


# ---------------------------------------------------------------------------------------------
# trabecular random field: cubic B-spline value noise on a seeded lattice, 2 octaves
def _bspline_weights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lattice index k (of the first of 4 nodes) and the 4 cubic B-spline weights at positions t."""
    k = np.floor(t)
    f = t - k
    w = np.stack([(1 - f) ** 3, 3 * f**3 - 6 * f**2 + 4, -3 * f**3 + 3 * f**2 + 3 * f + 1, f**3], -1) / 6
    return k.astype(np.int64) - 1, w


def _axis_matrix(n: int, spacing: float, offset: float) -> np.ndarray:
    """(n, K) float32 matrix interpolating K lattice nodes onto n voxels, rows normalised to unit norm."""
    k, w = _bspline_weights((np.arange(n) + offset * spacing) / spacing)
    matrix = np.zeros((n, int(k[-1]) + 5), np.float64)
    for j in range(4):
        matrix[np.arange(n), k + 1 + j] = w[:, j]
    return (matrix / np.linalg.norm(w, axis=1)[:, None]).astype(np.float32)


def _lattice_plane(config, octave: int, plane: int) -> np.ndarray:
    """Lattice plane ``plane`` of an octave interpolated to (y, x), unit variance, float32."""
    geo = _geometry(config)
    spacing = geo.lattice / 2**octave
    _, oy, ox = geo.lattice_offsets[octave]
    my = _axis_matrix(geo.ny, spacing, oy)
    mx = _axis_matrix(geo.nx, spacing, ox)
    nodes = _rng(config, _LATTICE, octave, plane + 1).standard_normal((my.shape[1], mx.shape[1]), np.float32)
    return (my @ nodes) @ mx.T


def _octave(config, octave: int, z0: int, z1: int) -> np.ndarray:
    """One octave of the field on slices z0..z1-1: (z, y, x) float32 of unit variance."""
    geo = _geometry(config)
    spacing = geo.lattice / 2**octave
    k, w = _bspline_weights((np.arange(z0, z1) + geo.lattice_offsets[octave, 0] * spacing) / spacing)
    w = (w / np.linalg.norm(w, axis=1)[:, None]).astype(np.float32)
    planes = {p: _lattice_plane(config, octave, p) for p in range(int(k[0]), int(k[-1]) + 4)}
    field = np.empty((z1 - z0, geo.ny, geo.nx), np.float32)
    for i, first in enumerate(k.tolist()):
        p0, p1, p2, p3 = (planes[first + j] for j in range(4))
        field[i] = ((w[i, 0] * p0 + w[i, 1] * p1) + w[i, 2] * p2) + w[i, 3] * p3
    return field


def _random_field(config, z0: int, z1: int) -> np.ndarray:
    """(z1-z0, y, x) float32 band-passed random field of unit variance: two octaves."""
    field = _octave(config, 0, z0, z1)
    field += np.float32(0.5) * _octave(config, 1, z0, z1)
    field *= np.float32(1 / math.sqrt(1.25))
    return field


# ---------------------------------------------------------------------------------------------
# materials
def _materials(config, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
    """Material map (uint8) and bone-intensity modulation field (float32) of slices z0..z1-1."""
    geo = _geometry(config)
    sl = _slices(config, geo, z0, z1)
    field = _random_field(config, z0, z1)
    y = np.arange(geo.ny, dtype=np.float32)[None, :, None]
    x = np.arange(geo.nx, dtype=np.float32)[None, None, :]
    u = (y - sl.cy.astype(np.float32)[:, None, None]) / sl.ry.astype(np.float32)[:, None, None]
    v = (x - sl.cx.astype(np.float32)[:, None, None]) / sl.rx.astype(np.float32)[:, None, None]
    rho = np.sqrt(u * u + v * v)
    safe = np.maximum(rho, 1e-6)
    outer, modulation = _outline(geo, v / safe, u / safe)
    thick = _thickness(config, sl.thick_mean.astype(np.float32)[:, None, None], modulation)
    rel = rho / outer  # 1 on the outer surface of the bone
    ry, rx = geo.centre
    axis_r2 = (y - ry) ** 2 + (x - rx) ** 2
    mat = np.repeat(np.where(axis_r2 <= geo.container**2, EMBEDDING, AIR).astype(np.uint8), z1 - z0, axis=0)
    inside = rel < 1
    marrow = rel < 1 - thick
    mat[inside] = CORTEX
    mat[marrow] = MARROW
    band = sl.band.astype(np.float32)[:, None, None]
    mat[marrow & (np.abs(field) < band)] = TRABECULA
    inner_safe = rel < 1 - 1.0 / geo.radius  # canals keep a voxel of bone towards the outside
    _paint_canals(config, geo, sl, mat, inside & ~marrow & inner_safe)
    _paint_bubbles(config, geo, mat, z0, z1)
    return mat, field


def _blocks(geo: _Geometry, z0: int, z1: int, before: int, after: int) -> range:
    return range(max(z0 // geo.block - before, 1 - _BLOCK_OFFSET), (z1 - 1) // geo.block + after + 1)


def _paint_disk(plane: np.ndarray, cy: float, cx: float, r: float, value: int, where: np.ndarray) -> None:
    y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, plane.shape[0])
    x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, plane.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    yy = np.arange(y0, y1)[:, None] - cy
    xx = np.arange(x0, x1)[None, :] - cx
    disk = (yy * yy + xx * xx < r * r) & where[y0:y1, x0:x1]
    plane[y0:y1, x0:x1][disk] = value


def _paint_canals(config, geo: _Geometry, sl: _Slices, mat: np.ndarray, cortex: np.ndarray) -> None:
    """Vascular canals along z: each owned by a z block, at a fixed depth in the cortex."""
    z0, z1 = int(sl.z[0]), int(sl.z[-1]) + 1
    for b in _blocks(geo, z0, z1, before=3, after=0):
        rng = _rng(config, _CANALS, b + _BLOCK_OFFSET)
        for _ in range(rng.poisson(geo.canals_per_block)):
            start = b * geo.block + rng.uniform(0, geo.block)
            stop = start + rng.uniform(0.3, 3.0) * geo.block
            angle, swing, period, phase = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.15), \
                rng.uniform(0.5, 2) * geo.block, rng.uniform(0, 2 * np.pi)
            depth, radius = rng.uniform(0.3, 0.7), rng.uniform(*geo.canal_radius)
            for z in range(max(z0, math.ceil(start)), min(z1, math.ceil(stop))):
                i = z - z0
                theta = angle + swing * np.sin(2 * np.pi * z / period + phase)
                c, s = np.cos(theta), np.sin(theta)
                outer, modulation = _outline(geo, c, s)
                rel = outer * (1 - _thickness(config, sl.thick_mean[i], modulation) * (1 - depth))
                _paint_disk(mat[i], sl.cy[i] + sl.ry[i] * rel * s, sl.cx[i] + sl.rx[i] * rel * c, radius,
                            PORE, cortex[i])


def _paint_bubbles(config, geo: _Geometry, mat: np.ndarray, z0: int, z1: int) -> None:
    """Air bubbles (spheres) in the embedding medium, each owned by a z block."""
    for b in _blocks(geo, z0, z1, before=1, after=1):
        rng = _rng(config, _BUBBLES, b + _BLOCK_OFFSET)
        n = rng.poisson(geo.bubbles_per_block)
        bz = b * geo.block + rng.uniform(0, geo.block, n)
        angle, dist = rng.uniform(0, 2 * np.pi, n), geo.container * np.sqrt(rng.uniform(0, 1, n))
        radius = rng.uniform(*geo.bubble_radius, n)
        by, bx = geo.centre[0] + dist * np.sin(angle), geo.centre[1] + dist * np.cos(angle)
        for j in np.flatnonzero((bz + radius > z0 - 1) & (bz - radius < z1)):
            for z in range(max(z0, math.ceil(bz[j] - radius[j])), min(z1, math.floor(bz[j] + radius[j]) + 1)):
                r2 = radius[j] ** 2 - (z - bz[j]) ** 2
                if r2 > 0:
                    plane = mat[z - z0]
                    _paint_disk(plane, by[j], bx[j], math.sqrt(r2), BUBBLE, plane == EMBEDDING)


# ---------------------------------------------------------------------------------------------
# grey values
def _grey(mat: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Ideal grey values (float32) of a material map; bone mineralisation varies with the field."""
    grey = MATERIAL_GREY[mat]
    bone = mat >= CORTEX
    grey[bone] += np.float32(0.04) * field[bone]
    return grey


@functools.lru_cache(maxsize=8)
def _radial_maps(config) -> tuple[np.ndarray, np.ndarray]:
    """(cupping factor, ring offsets), each (y, x) float32, centred on the rotation axis."""
    geo = _geometry(config)
    y = np.arange(geo.ny)[:, None] - geo.centre[0]
    x = np.arange(geo.nx)[None, :] - geo.centre[1]
    r = np.sqrt(y * y + x * x)
    cupping = 1 - config.cupping * np.clip(1 - (r / geo.container) ** 2, 0, 1)
    rng = _rng(config, _RINGS)
    bins = int(r.max()) + 2
    amplitude = rng.standard_normal(bins) * (rng.uniform(0, 1, bins) < 0.2)
    rings = config.ring_strength * CONTRAST * amplitude[np.rint(r).astype(np.int64)]
    return cupping.astype(np.float32), rings.astype(np.float32)


def _add_noise(config, image: np.ndarray, z0: int) -> None:
    """Signal-dependent Gaussian noise, one seeded generator per slice, in place."""
    if config.noise <= 0:
        return
    scale = np.float32(config.noise * CONTRAST)
    for i in range(image.shape[0]):
        level = np.clip(image[i] / np.float32(BONE_GREY), 0, 2)
        std = scale * np.sqrt(np.float32(0.1) + np.float32(0.9) * level)
        image[i] += std * _rng(config, _NOISE, z0 + i).standard_normal(image.shape[1:], np.float32)


def _to_dtype(config, image: np.ndarray) -> np.ndarray:
    if config.dtype == "float32":
        return image
    top = DTYPE_SCALE[config.dtype]
    return np.clip(image * np.float32(top) + np.float32(0.5), 0, top).astype(config.dtype)


# ---------------------------------------------------------------------------------------------
# public API
def phantom_slab(config, z0: int, z1: int) -> tuple[np.ndarray, np.ndarray]:
    """Image and labels of slices z0..z1-1, each (z1-z0, y, x); identical to the same slices of
    the whole phantom, whatever the slab boundaries."""
    nz = config.shape[0]
    if not 0 <= z0 < z1 <= nz:
        raise ConfigError(f"slab [{z0}:{z1}] is outside the phantom's 0..{nz} slices")
    halo = _halo(config)
    e0, e1 = max(0, z0 - halo), min(nz, z1 + halo)
    chunk = max(1, _CHUNK_VOXELS // (config.shape[1] * config.shape[2]))
    grey = np.empty((e1 - e0, *config.shape[1:]), np.float32)
    labels = np.empty((z1 - z0, *config.shape[1:]), np.uint8)
    for c0 in range(e0, e1, chunk):
        c1 = min(c0 + chunk, e1)
        mat, field = _materials(config, c0, c1)
        grey[c0 - e0:c1 - e0] = _grey(mat, field)
        i0, i1 = max(c0, z0), min(c1, z1)
        if i0 < i1:
            labels[i0 - z0:i1 - z0] = MATERIAL_LABEL[mat[i0 - c0:i1 - c0]]
    if config.blur_sigma > 0:
        from scipy.ndimage import gaussian_filter  # here: the CLI imports this module for its flags

        grey = gaussian_filter(grey, config.blur_sigma, mode="nearest", truncate=_TRUNCATE)
    image = grey[z0 - e0:z1 - e0]
    cupping, rings = _radial_maps(config)
    image *= cupping
    image += rings
    _add_noise(config, image, z0)
    return _to_dtype(config, image), labels


def _phantom_info(config) -> tuple[VolumeInfo, VolumeInfo]:
    """Geometry of the image and of the label volume that ``config`` describes."""
    voxel = (config.voxel_size_mm,) * 3
    image = VolumeInfo(config.shape, np.dtype(config.dtype), voxel, name="phantom")
    labels = VolumeInfo(config.shape, np.uint8, voxel, name="phantom-labels", class_names=CLASS_NAMES)
    return image, labels


def _slab_size(config, slab_slices: int) -> int:
    if isinstance(slab_slices, bool) or not isinstance(slab_slices, (int, np.integer)) or slab_slices < 1:
        raise ConfigError(f"slab_slices must be a positive integer, got {slab_slices!r}")
    return int(slab_slices)


def make_phantom(config=None, *, progress: ProgressCallback | None = None) -> tuple[Volume, Volume]:
    """The phantom in memory: (image, labels) Volumes of shape ``config.shape`` (z, y, x).

    The image has ``config.dtype``; the labels are uint8 with classes ("background", "bone",
    "pores"). Use :func:`write_phantom` for volumes that do not fit in memory.
    """
    config = config or PhantomConfig()
    image_info, label_info = _phantom_info(config)
    image = np.empty(config.shape, image_info.dtype)
    labels = np.empty(config.shape, np.uint8)
    tracker = ProgressTracker(config.shape[0], "phantom", progress)
    for z0 in range(0, config.shape[0], 64):
        z1 = min(z0 + 64, config.shape[0])
        image[z0:z1], labels[z0:z1] = phantom_slab(config, z0, z1)
        tracker.advance(z1 - z0)
    return Volume(image, image_info), Volume(labels, label_info)


def write_phantom(config, image_path: str | os.PathLike, label_path: str | os.PathLike, *,
                  overwrite: bool = False, slab_slices: int = 64,
                  progress: ProgressCallback | None = None) -> tuple[Path, Path]:
    """Generate the phantom slab by slab and write image and labels to any supported format.

    Each slab of ``slab_slices`` slices is generated on its own (with a halo for the blur) and
    written through :func:`bone_avizo.io.create_writer`, so memory stays bounded; the result is
    bit-identical to :func:`make_phantom`. Both outputs appear only when complete. Returns the
    two final paths.
    """
    from bone_avizo.io import create_writer

    image_path, label_path = Path(image_path), Path(label_path)
    if image_path.resolve() == label_path.resolve():
        raise OutputWriteError(f"image and labels must go to different files, both are {image_path}")
    step = _slab_size(config, slab_slices)
    image_info, label_info = _phantom_info(config)
    nz = config.shape[0]
    tracker = ProgressTracker(nz, "phantom", progress)
    with contextlib.ExitStack() as stack:
        image_writer = stack.enter_context(create_writer(image_path, image_info, overwrite=overwrite))
        label_writer = stack.enter_context(create_writer(label_path, label_info, overwrite=overwrite))
        for z0 in range(0, nz, step):
            z1 = min(z0 + step, nz)
            image, labels = phantom_slab(config, z0, z1)
            image_writer.write_slab(z0, image)
            label_writer.write_slab(z0, labels)
            image_writer.mark_done(z1)
            label_writer.mark_done(z1)
            tracker.advance(z1 - z0)
    log.info("phantom %s seed %d written to %s and %s", config.shape, config.seed, image_path, label_path)
    return image_path, label_path
