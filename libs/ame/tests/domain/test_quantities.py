from __future__ import annotations

from fractions import Fraction

import pytest

from ame.domain.quantities import (
    QuantityError,
    format_bytes,
    format_cpu,
    parse_bytes,
    parse_cpu_millis,
    parse_gpus,
    parse_quantity,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # The docs' own example list: all roughly 129 MB.
        ("128974848", 128974848),
        ("129e6", 129_000_000),
        ("129M", 129_000_000),
        ("128974848000m", 128974848),
        ("123Mi", 123 * 2**20),
        ("2.5Gi", 2684354560),
        ("2.5G", 2_500_000_000),
        ("10G", 10**10),
        ("2.5E", 25 * 10**17),
        ("2.5Ei", int(Fraction(5, 2) * 2**60)),
        ("2.5T", 2_500_000_000_000),
        ("2.5Ti", int(Fraction(5, 2) * 2**40)),
        ("2.5k", 2500),
        ("2.5Ki", 2560),
        ("2500m", 3),  # 2.5 bytes, rounded up like Kubernetes
        ("0", 0),
    ],
)
def test_bytes_follow_the_kubernetes_quantity_grammar(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize(("text", "millis"), [("1", 1000), ("0.5", 500), ("500m", 500), ("4", 4000), ("0.0001", 1)])
def test_cpu_is_counted_in_millicores(text: str, millis: int) -> None:
    assert parse_cpu_millis(text) == millis


def test_exponent_and_exa_suffix_are_told_apart() -> None:
    assert parse_quantity("2E3") == 2000
    assert parse_quantity("2E") == 2 * 10**18


@pytest.mark.parametrize("text", ["1", "2", "1000m"])
def test_whole_gpus_are_accepted(text: str) -> None:
    assert parse_gpus(text) >= 1


@pytest.mark.parametrize("text", ["0.5", "500m", "1.5"])
def test_fractional_gpus_are_refused(text: str) -> None:
    with pytest.raises(QuantityError, match="GPUs cannot be shared"):
        parse_gpus(text)


def test_a_spaced_unit_gets_both_spellings_suggested() -> None:
    with pytest.raises(QuantityError) as caught:
        parse_bytes("10 GB")
    assert "10G (10 gigabytes)" in str(caught.value)
    assert "10Gi (10 gibibytes)" in str(caught.value)


@pytest.mark.parametrize("text", ["-1", "1e999", "abc", "", "1.2.3", "5Gb/s"])
def test_garbage_and_out_of_range_values_are_refused(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_bytes(text)


def test_booleans_are_not_quantities() -> None:
    with pytest.raises(QuantityError):
        parse_quantity(True)


@pytest.mark.parametrize(
    ("amount", "text"), [(2684354560, "2560Mi"), (10**10, "10G"), (1024, "1Ki"), (1000, "1k"), (3, "3"), (0, "0")]
)
def test_bytes_are_formatted_with_the_largest_exact_suffix(amount: int, text: str) -> None:
    assert format_bytes(amount) == text
    assert parse_bytes(text) == amount


@pytest.mark.parametrize(("millis", "text"), [(4000, "4"), (500, "500m"), (1500, "1500m")])
def test_cpu_is_formatted_canonically(millis: int, text: str) -> None:
    assert format_cpu(millis) == text
    assert parse_cpu_millis(text) == millis
