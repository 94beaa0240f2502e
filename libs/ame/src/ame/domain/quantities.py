"""Kubernetes-style resource quantities (``500m``, ``2.5Gi``, ``10G``, ``129e6``).

Users write the units the docs teach (the Kubernetes quantity grammar); the rest of AME
works with plain integers (millicores, bytes, whole GPUs), so parsing and canonical
formatting both live here and nowhere else.

Arithmetic is exact (:class:`~fractions.Fraction`): ``2.5Gi`` must be exactly 2684354560
bytes, which floats cannot promise for every input.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from ame.domain.limits import INT32_MAX, INT64_MAX

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL: dict[str, Fraction] = {
    "m": Fraction(1, 1000),
    "": Fraction(1),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
}

# The exponent form is tried before the bare "E" (exa) suffix: "2E3" is 2000, "2E" is 2 exa.
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<exponent>[eE][+-]?\d+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E))?$"
)
# Loose shape used only to suggest a fix ("10 GB" -> "10G").
_LOOSE = re.compile(r"^\s*(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>[A-Za-z]*)\s*$")
_UNIT_SPELLINGS = {
    "b": "",
    "byte": "",
    "bytes": "",
    "kb": "k",
    "kib": "Ki",
    "ki": "Ki",
    "mb": "M",
    "mib": "Mi",
    "mi": "Mi",
    "g": "G",
    "gb": "G",
    "gib": "Gi",
    "gi": "Gi",
    "t": "T",
    "tb": "T",
    "tib": "Ti",
    "ti": "Ti",
    "p": "P",
    "pb": "P",
    "pib": "Pi",
    "pi": "Pi",
    "e": "E",
    "eb": "E",
    "eib": "Ei",
    "ei": "Ei",
}
_DECIMAL_NAMES = {"k": "kilobytes", "M": "megabytes", "G": "gigabytes", "T": "terabytes", "P": "petabytes"}
_DECIMAL_NAMES["E"] = "exabytes"
_BINARY_NAMES = {
    "Ki": "kibibytes",
    "Mi": "mebibytes",
    "Gi": "gibibytes",
    "Ti": "tebibytes",
    "Pi": "pebibytes",
}
_BINARY_NAMES["Ei"] = "exbibytes"
# Nothing a scheduler can place is larger than this; it also keeps "1e999999" from building
# a million-digit integer.
_MAX_EXPONENT = 30
_MAX_VALUE = INT64_MAX  # what the wire and the database carry


class QuantityError(ValueError):
    """A value that is not a valid quantity for the resource it was given for."""


def parse_quantity(value: object) -> Fraction:
    """Parse a Kubernetes quantity into an exact number of base units (CPUs or bytes).

    Raises:
        QuantityError: the value does not follow the quantity grammar.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(f"expected a quantity such as 500m, 2, 2.5Gi or 10G, got {_show(value)}")
    text = repr(value) if isinstance(value, float) else str(value)
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise QuantityError(f"{text!r} is not a valid quantity")
    number = Fraction(match["number"])
    if match["exponent"] is not None:
        exponent = int(match["exponent"][1:])
        if abs(exponent) > _MAX_EXPONENT:
            raise QuantityError(f"{text!r} is out of range")
        number *= Fraction(10) ** exponent
    elif match["suffix"] is not None:
        suffix = match["suffix"]
        number *= Fraction(_BINARY[suffix]) if suffix in _BINARY else Fraction(_DECIMAL[suffix])
    if number < 0:
        raise QuantityError(f"{text!r} is negative")
    if number > _MAX_VALUE:
        raise QuantityError(f"{text!r} is out of range")
    return number


def parse_cpu_millis(value: object) -> int:
    """Parse a CPU amount (``2``, ``0.5``, ``500m``) into millicores, rounding up like Kubernetes."""
    try:
        cpus = parse_quantity(value)
    except QuantityError as error:
        raise QuantityError(f"{error}: cpu is a number of CPUs (2, 0.5) or of millicores (500m = half a CPU)") from None
    return math.ceil(cpus * 1000)


def parse_bytes(value: object, *, resource: str = "memory") -> int:
    """Parse a memory or storage amount (``10G``, ``2.5Gi``, ``128974848``) into whole bytes.

    Fractions of a byte (``2500m``) are rounded up, as Kubernetes does.
    """
    try:
        amount = parse_quantity(value)
    except QuantityError as error:
        raise QuantityError(f"{error}{_bytes_hint(value, resource)}") from None
    return math.ceil(amount)


def parse_gpus(value: object) -> int:
    """Parse a GPU count; only whole GPUs can be requested."""
    try:
        amount = parse_quantity(value)
    except QuantityError as error:
        raise QuantityError(f"{error}: GPUs are requested as a whole number such as 1 or 2") from None
    if amount.denominator != 1:
        raise QuantityError(
            f"{_show(value)} is not a whole number: GPUs cannot be shared, request 1 or more whole GPUs"
        )
    if amount > INT32_MAX:
        raise QuantityError(f"{_show(value)} is out of range: at most {INT32_MAX} GPUs")
    return int(amount)


def format_cpu(millis: int) -> str:
    """Format millicores canonically: ``4000`` -> ``"4"``, ``500`` -> ``"500m"``."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(amount: int) -> str:
    """Format bytes with the exact suffix that gives the shortest number (``"2560Mi"``, ``"10G"``)."""
    candidates = [(amount, "")]
    for suffix, factor in [*_BINARY.items(), *((s, int(f)) for s, f in _DECIMAL.items() if f >= 1000)]:
        if amount % factor == 0:
            candidates.append((amount // factor, suffix))
    mantissa, suffix = min(candidates, key=lambda candidate: (candidate[0], len(candidate[1])))
    return f"{mantissa}{suffix}"


def _bytes_hint(value: object, resource: str) -> str:
    """Suggest the spelling the user most likely meant, e.g. ``10 GB`` -> ``10G`` or ``10Gi``."""
    text = str(value) if isinstance(value, str | int | float) and not isinstance(value, bool) else ""
    match = _LOOSE.match(text)
    unit = _UNIT_SPELLINGS.get(match["unit"].lower()) if match else None
    if match is None or unit is None:
        return f": {resource} is a number of bytes with an optional suffix, e.g. 512Mi, 10G or 2.5Gi"
    number = match["number"]
    if unit in _DECIMAL_NAMES:
        binary = unit + "i"
        return (
            f": write {number}{unit} ({number} {_DECIMAL_NAMES[unit]}) "
            f"or {number}{binary} ({number} {_BINARY_NAMES[binary]}), without a space"
        )
    if unit in _BINARY_NAMES:
        return f": write {number}{unit} ({number} {_BINARY_NAMES[unit]}), without a space"
    return f": write {number} (bytes), without a unit"


def _show(value: object) -> str:
    return repr(value) if isinstance(value, str) else str(value)
