"""The products (one per machine type and id).

Every machine id is its own product with fixed parameters (rotation speed, blade/vane count,
harmonic weights, structural modes...) drawn from a product seed that depends only on the machine
type and id, so ``id_00`` is the same fan in every data set. The seed also places the product
relative to the microphone array and picks the factory hall it stands in. Its nominal normal power
(:func:`_nominal_power`) calibrates its clips.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from humwatch.data.synth.fan import _fan, _fan_product
from humwatch.data.synth.pump import _pump, _pump_product
from humwatch.data.synth.room import SOURCE_DISTANCE, _factories, _Geometry, _pad, _to_array
from humwatch.data.synth.signals import _TWO_PI, _power
from humwatch.data.synth.slider import _slider, _slider_product
from humwatch.data.synth.valve import _valve, _valve_product

_SALT_PRODUCT = 0x5EED_0001
_SALT_REFERENCE = 0x5EED_0005


def _machine_key(machine: str) -> int:
    return zlib.crc32(machine.encode("ascii"))


@dataclass
class _Product:
    machine: str
    machine_id: int
    sr: int
    p: dict  # model parameters
    geometry: "_Geometry"  # where the product stands relative to the array
    hall: int  # the factory hall it stands in (its background)


@lru_cache(maxsize=256)
def _product(machine: str, machine_id: int, sr: int) -> _Product:
    """The fixed parameters of product ``machine`` id ``machine_id`` (independent of the seed)."""
    r = np.random.default_rng(np.random.SeedSequence([_SALT_PRODUCT, _machine_key(machine), machine_id]))
    params = _PRODUCT_MAKERS[machine](r, sr)
    # Placement: distance as MIMII, direction and height random per product.
    az = r.uniform(0, _TWO_PI)
    el = r.uniform(-0.3, 0.4)
    d = SOURCE_DISTANCE[machine]
    src = d * np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
    hall = int(r.integers(len(_factories())))
    return _Product(machine, machine_id, sr, params, _Geometry(src, sr), hall)


_REFERENCE_TAKES, _REFERENCE_SECONDS = 4, 3.0


@lru_cache(maxsize=1024)
def _nominal_power(machine: str, machine_id: int, sr: int, channels: int) -> float:
    """The product's nominal normal power at the microphones (mean over channels): the mean power of
    four 3 s normal reference recordings made with a fixed generator. Dividing by it puts every
    product's normal clips at the same level, whatever its parameters."""
    prod = _product(machine, machine_id, sr)
    rng = np.random.default_rng(np.random.SeedSequence([_SALT_REFERENCE, _machine_key(machine), machine_id]))
    n = int(_REFERENCE_SECONDS * sr)
    powers = []
    for _ in range(_REFERENCE_TAKES):
        x = _SOURCES[machine](prod, rng, n + 2 * _pad(sr), sr, "normal", 0.0)
        powers.append(_power(_to_array(x, n, channels, prod)))
    return float(np.mean(powers))


_SOURCES = {"fan": _fan, "pump": _pump, "valve": _valve, "slider": _slider}
_PRODUCT_MAKERS = {"fan": _fan_product, "pump": _pump_product, "valve": _valve_product, "slider": _slider_product}
