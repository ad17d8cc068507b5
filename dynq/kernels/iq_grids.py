"""The lattices of the 1–3 bit i-quants, and the lookup tables ggml's quantizers search them with.

Each i-quant codes groups of 8 (IQ1_*, IQ2_*) or 4 (IQ3_*) magnitudes as one point of a fixed
grid. Every grid point is a vector of *levels* ``l`` (0–2 for IQ1/IQ2, 0–7 for IQ3); the
quantizers work with the odd integers ``2*l + 1``, the dequantizers with the type's
``grid_map`` values. The grids are read from gguf-py's published constants (``gguf.quants``:
``grid_hex`` packs the levels of each point, ``grid_map`` the values they stand for), so dynq
carries no copy of ggml's tables.

ggml's ``iq2xs_init_impl`` / ``iq3xs_init_impl`` derive two tables from a grid, rebuilt here
with array operations (:func:`build`):

* the *map* from a packed level vector ``u = Σ l_k << (bits*k)`` to its grid index, -1 for the
  vectors that are not grid points;
* for every vector ``u`` off the grid, its *neighbours*: the grid points in the ``nwant``
  nearest distinct squared-distance shells around ``2*l + 1``, ordered by (distance, grid
  index) — what ggml's ``qsort`` with ``iq2_compare_func`` leaves in front.

ggml fills the neighbour lists for every ``u`` below ``kmap_size``; the quantizers only look up
vectors whose levels they clamped to ``[0, reach)``, so those are the ones built here (all
3**8 = 6561 level vectors of IQ1/IQ2, all 8**4 = 4096 of IQ3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np
import torch
from gguf import quants as gq
from torch import Tensor

__all__ = ["KSIGNS", "Lattice", "build", "lattice"]


def _ksigns() -> np.ndarray:
    """ggml's ``ksigns_iq2xs``: 7 sign bits plus an 8th that makes the parity even."""
    s = np.frombuffer(gq.IQ2_XXS.ksigns, dtype=np.uint8).copy()
    i = np.arange(128)
    par = np.array([bin(v).count("1") & 1 for v in i])
    assert (s == (i | (par << 7))).all()
    return s


#: ggml's ``ksigns_iq2xs`` (from gguf-py)
KSIGNS = _ksigns()


def grid_levels(cls: type) -> np.ndarray:
    """Decode a gguf quant class's ``grid_hex`` into its level indices ``[grid_size, group]``.

    (The same unpacking as ``gguf.quants.__Quant.init_grid``, stopping before the levels are
    replaced by ``grid_map`` values.)
    """
    nlev = len(cls.grid_map)
    bits = int(np.ceil(np.log2(nlev)))
    per_byte = 8 // bits
    step = 8 // per_byte
    h = np.frombuffer(cls.grid_hex, dtype=np.uint8).reshape(-1, 2)
    h = (np.where(h > 0x40, h + 9, h) & 0x0F).astype(np.uint8)
    b = (h[:, 0] << 4) | h[:, 1]
    lv = (b.reshape(-1, 1) >> np.arange(0, 8, step, dtype=np.uint8).reshape(1, -1)) & (
        (1 << bits) - 1
    )
    lv = lv.reshape(cls.grid_shape).astype(np.int64)
    assert lv.max() < nlev
    return lv


@dataclass(eq=False)
class Lattice:
    """A grid with its map and neighbour lists (numpy), and their torch copies per device."""

    name: str
    levels: np.ndarray  # [grid_size, group] int64 level indices
    bits: int  # bits per level in the packed index u
    reach: int  # the quantizer's levels are clamped to [0, reach)
    nwant: int  # distance shells in each neighbour list
    map: np.ndarray  # [1 << bits*group] int64: grid index, -1 off the grid
    nb_start: np.ndarray  # [1 << bits*group] int64: first neighbour in nb_list (0 on the grid)
    nb_count: np.ndarray  # [1 << bits*group] int64: number of neighbours (0 on the grid)
    nb_list: np.ndarray  # [total] int64 grid indices
    packed: np.ndarray  # [grid_size] int64: each grid point's levels packed, sum l_i << bits*i
    _dev: dict[str, dict[str, Tensor]] = field(default_factory=dict, repr=False)

    @property
    def group(self) -> int:
        return self.levels.shape[1]

    @property
    def size(self) -> int:
        return self.levels.shape[0]

    @property
    def nb_entries(self) -> np.ndarray:
        """Each neighbour-list entry ``j`` with its packed levels: ``j | packed[j] << 10``
        (int64), what the compiled grid searches load per neighbour."""
        return self.nb_list | (self.packed[self.nb_list] << 10)

    def on(self, device: torch.device) -> dict[str, Tensor]:
        """The tables as torch tensors on ``device`` (cached)."""
        key = str(device)
        t = self._dev.get(key)
        if t is None:
            t = {
                "levels": torch.from_numpy(self.levels).to(device),
                "pos": torch.from_numpy(2 * self.levels + 1).to(device=device, dtype=torch.float32),
                "map": torch.from_numpy(self.map).to(device),
                "packed": torch.from_numpy(self.packed).to(device),
                "nb_start": torch.from_numpy(self.nb_start).to(device),
                "nb_count": torch.from_numpy(self.nb_count).to(device),
                "nb_list": torch.from_numpy(self.nb_list).to(device),
                "nb_start32": torch.from_numpy(self.nb_start).to(device=device, dtype=torch.int32),
                "nb_count32": torch.from_numpy(self.nb_count).to(device=device, dtype=torch.int32),
                "nb_list32": torch.from_numpy(self.nb_list).to(device=device, dtype=torch.int32),
                # for the neighbour searches: the odd integers 2l+1 of the levels, and for each
                # entry of nb_list its offsets i*reach + l_i into a per-group [g, reach] table
                # ([g, len(nb_list)])
                "lvals": torch.arange(1, 2 * self.reach, 2, dtype=torch.float32, device=device),
                "nb_toff32": torch.from_numpy(
                    np.ascontiguousarray(
                        (self.reach * np.arange(self.group) + self.levels[self.nb_list]).T,
                        dtype=np.int32,
                    )
                ).to(device),
            }
            self._dev[key] = t
        return t


def build(name: str, levels: np.ndarray, bits: int, reach: int, nwant: int) -> Lattice:
    """ggml's ``iq2xs_init_impl`` / ``iq3xs_init_impl`` for a grid of level vectors."""
    g = levels.shape[1]
    size = 1 << (bits * g)
    shifts = bits * np.arange(g, dtype=np.int64)
    gu = (levels << shifts).sum(axis=1)
    kmap = np.full(size, -1, dtype=np.int64)
    kmap[gu] = np.arange(len(levels))
    # every level vector the quantizer can look up
    dom = np.stack(np.meshgrid(*([np.arange(reach)] * g), indexing="ij"), axis=-1).reshape(-1, g)
    dom = dom[:, ::-1]  # any order will do; this one runs u upwards
    du = (dom << shifts).sum(axis=1)
    off = kmap[du] < 0
    du, dom = du[off], dom[off]
    # squared distances between the odd integers 2l+1 (as |a|² + |b|² - 2a·b in float64:
    # exact for these small integers)
    pos_g = torch.from_numpy(2 * levels + 1).to(torch.float64)
    pos_d = torch.from_numpy(2 * dom + 1).to(torch.float64)
    d2 = (pos_d * pos_d).sum(1, keepdim=True) + (pos_g * pos_g).sum(1) - 2 * pos_d @ pos_g.T
    d2 = d2.round().to(torch.int64)  # [D, G]
    # the nwant-th smallest distinct distance of each row: everything up to it is kept
    top = int(d2.max()) + 1
    present = torch.zeros((d2.shape[0], top), dtype=torch.int32)
    present.scatter_(1, d2, 1)
    shells = torch.cumsum(present, dim=1)
    thr = (shells >= nwant).to(torch.uint8).argmax(dim=1)
    thr = torch.where(shells[:, -1] >= nwant, thr, torch.full_like(thr, top))
    keep = d2 <= thr.unsqueeze(1)
    # qsort by (d2, j): sort the kept (row, d2, j) triples
    ri, ci = keep.nonzero(as_tuple=True)
    key = (ri * top + d2[ri, ci]) * len(levels) + ci
    order = torch.sort(key).indices
    nb_list = ci[order].numpy().astype(np.int64)
    counts = keep.sum(dim=1).numpy().astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    nb_start = np.zeros(size, dtype=np.int64)
    nb_count = np.zeros(size, dtype=np.int64)
    nb_start[du] = starts
    nb_count[du] = counts
    return Lattice(name, levels, bits, reach, nwant, kmap, nb_start, nb_count, nb_list, gu)


#: the pass after the IQ2/IQ3 trials (``iq_lowbit._search_requantize``'s ``redo``) as the
#: compiled grid searches (Triton and numba) number it
REDO = {None: 0, "all": 1, "off": 2, "off_all": 3}

#: (gguf class, bits per level, reach, nwant) of each lattice, as ggml sets them up
_SPECS = {
    "iq2_xxs": (gq.IQ2_XXS, 2, 3, 2),
    "iq2_xs": (gq.IQ2_XS, 2, 3, 2),
    "iq2_s": (gq.IQ2_S, 2, 3, 1),
    "iq1_s": (gq.IQ1_S, 2, 3, 3),  # IQ1_M shares it
    "iq3_xxs": (gq.IQ3_XXS, 3, 8, 2),
    "iq3_s": (gq.IQ3_S, 3, 8, 3),
}


@cache
def lattice(name: str) -> Lattice:
    """The lattice of ``name`` (``"iq2_xxs"``, …; ``"iq1_m"`` gives IQ1_S's), built once."""
    if name == "iq1_m":
        name = "iq1_s"
    cls, bits, reach, nwant = _SPECS[name]
    return build(name, grid_levels(cls), bits, reach, nwant)
