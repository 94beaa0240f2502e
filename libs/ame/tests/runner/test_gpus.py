"""The host-wide GPU pool: lists, whole devices, waiting with a reason, cancel, and settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ame.runner.gpus import (
    GpuDevice,
    GpuNeed,
    GpuPool,
    GpuRequestError,
    HostResourceSettings,
    gpu_environment,
    parse_gpu_list,
    parse_gpu_properties,
)


def test_gpu_lists_are_parsed_and_bad_ones_refused() -> None:
    assert parse_gpu_list("0, 1,,2") == ["0", "1", "2"]
    assert parse_gpu_list("") == []
    with pytest.raises(ValueError, match="names a device twice"):
        parse_gpu_list("0,0")
    with pytest.raises(ValueError, match="may contain only"):
        parse_gpu_list("0;rm -rf")


def test_settings_read_the_host_description(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AME_GPUS", "0,1")
    monkeypatch.setenv("AME_MEMORY_ENFORCEMENT", "watchdog")
    settings = HostResourceSettings()
    assert settings.gpus == "0,1"
    assert settings.memory_enforcement == "watchdog"
    monkeypatch.setenv("AME_MEMORY_ENFORCEMENT", "sometimes")
    with pytest.raises(ValueError, match="memory_enforcement"):
        HostResourceSettings()


def test_two_pools_on_one_directory_never_hand_out_a_device_twice(tmp_path: Path) -> None:
    # Two pools stand for two processes: flock locks belong to the open file, not the process.
    first, second = GpuPool(["0", "1"], tmp_path), GpuPool(["0", "1"], tmp_path)
    a = first.try_acquire(1)
    b = second.try_acquire(1)
    assert a is not None and b is not None
    assert {*a.devices, *b.devices} == {"0", "1"}
    assert first.free() == 0
    assert second.try_acquire(1) is None
    a.release()
    assert second.free() == 1
    c = second.try_acquire(1)
    assert c is not None and c.devices == a.devices
    assert c.environment() == {
        "CUDA_VISIBLE_DEVICES": c.devices[0],
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "NVIDIA_VISIBLE_DEVICES": c.devices[0],
    }
    b.release()
    c.release()


def test_a_request_takes_all_its_devices_or_none(tmp_path: Path) -> None:
    pool = GpuPool(["0", "1"], tmp_path)
    one = pool.try_acquire(1)
    assert one is not None
    assert pool.try_acquire(2) is None
    assert pool.free() == 1  # the failed request gave back what it had taken
    one.release()
    both = pool.try_acquire(2)
    assert both is not None and both.devices == ("0", "1")
    both.release()


def test_an_impossible_request_is_refused_with_the_count(tmp_path: Path) -> None:
    with pytest.raises(GpuRequestError, match="asks for 3 GPUs and this host has 2 GPUs"):
        GpuPool(["0", "1"], tmp_path).check(3)
    with pytest.raises(GpuRequestError, match="asks for 1 GPU and this host has no GPU"):
        GpuPool([], tmp_path).try_acquire(1)


async def test_a_waiting_request_says_why_and_gets_the_device_when_it_is_freed(tmp_path: Path) -> None:
    pool = GpuPool(["0", "1"], tmp_path)
    held = pool.try_acquire(2)
    assert held is not None
    reasons: list[str] = []

    async def on_wait(reason: str) -> None:
        reasons.append(reason)

    waiter = asyncio.create_task(pool.acquire(1, on_wait=on_wait))
    deadline = asyncio.get_running_loop().time() + 10
    while not reasons:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    assert reasons == ["waiting for 1 GPU, 0 of 2 free"]
    assert not waiter.done()
    held.release()
    lease = await asyncio.wait_for(waiter, timeout=10)
    assert lease is not None and len(lease.devices) == 1
    lease.release()


async def test_a_cancelled_wait_takes_nothing(tmp_path: Path) -> None:
    pool = GpuPool(["0"], tmp_path)
    held = pool.try_acquire(1)
    assert held is not None
    cancel = asyncio.Event()
    waiter = asyncio.create_task(pool.acquire(1, cancel=cancel))
    cancel.set()
    assert await asyncio.wait_for(waiter, timeout=10) is None
    held.release()
    assert pool.free() == 1


def test_no_devices_hides_the_hosts() -> None:
    assert gpu_environment(()) == {
        "CUDA_VISIBLE_DEVICES": "",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "NVIDIA_VISIBLE_DEVICES": "none",
    }


def test_gpu_descriptions_are_parsed_for_every_device_or_per_device() -> None:
    assert parse_gpu_properties("24Gi", ["0", "1"], lambda t: t) == {"0": "24Gi", "1": "24Gi"}
    assert parse_gpu_properties(" 0=16Gi, 1=80Gi ", ["0", "1"], lambda t: t) == {"0": "16Gi", "1": "80Gi"}
    assert parse_gpu_properties("", ["0"], lambda t: t) == {}
    with pytest.raises(ValueError, match="described twice"):
        parse_gpu_properties("0=1,0=2", ["0"], lambda t: t)
    with pytest.raises(ValueError, match=r"expected DEVICE=VALUE with one of this host's GPUs \(0\)"):
        parse_gpu_properties("0=1,x", ["0"], lambda t: t)


def test_only_devices_of_the_kind_asked_for_are_handed_out(tmp_path: Path) -> None:
    pool = GpuPool(
        [GpuDevice("0", 16 * 2**30, "Tesla T4"), GpuDevice("1", 80 * 2**30, "NVIDIA A100-SXM4-80GB")], tmp_path
    )
    big = GpuNeed(1, memory_bytes=24 * 2**30)
    lease = pool.try_acquire(big)
    assert lease is not None and lease.devices == ("1",)
    assert pool.free(big) == 0 and pool.free(1) == 1
    assert pool.try_acquire(big) is None  # the one device that fits is taken; the T4 does not count
    lease.release()
    model = pool.try_acquire(GpuNeed(1, model="nvidia-a100-sxm4-80gb"))  # as feature discovery writes it
    assert model is not None and model.devices == ("1",)
    model.release()
    with pytest.raises(GpuRequestError, match="asks for 2 GPUs with at least 24Gi of memory"):
        pool.check(GpuNeed(2, memory_bytes=24 * 2**30))


async def test_a_run_waiting_for_a_kind_of_gpu_says_which(tmp_path: Path) -> None:
    pool = GpuPool([GpuDevice("0", 16 * 2**30), GpuDevice("1", 80 * 2**30)], tmp_path)
    held = pool.try_acquire(GpuNeed(1, memory_bytes=40 * 2**30))
    assert held is not None
    reasons: list[str] = []

    async def on_wait(reason: str) -> None:
        reasons.append(reason)

    cancel = asyncio.Event()
    waiter = asyncio.create_task(pool.acquire(GpuNeed(1, memory_bytes=40 * 2**30), cancel=cancel, on_wait=on_wait))
    deadline = asyncio.get_running_loop().time() + 10
    while not reasons:
        assert asyncio.get_running_loop().time() < deadline, "the waiter never said why it waits"
        await asyncio.sleep(0.01)
    assert reasons == ["waiting for 1 GPU, 0 of 1 free (1 GPU with at least 40Gi of memory)"]
    held.release()
    lease = await asyncio.wait_for(waiter, 10)
    assert lease is not None and lease.devices == ("1",)
    lease.release()


def test_a_plain_request_takes_the_smallest_gpu_and_nvidia_smi_is_asked_only_for_a_kind(tmp_path: Path) -> None:
    asked: list[int] = []

    def detect() -> list[GpuDevice]:
        asked.append(1)
        return [GpuDevice("0", 80 * 2**30, "NVIDIA A100-SXM4-80GB"), GpuDevice("1", 16 * 2**30, "Tesla T4")]

    pool = GpuPool(["0", "1"], tmp_path, detect=detect)
    plain = pool.try_acquire(1)
    assert plain is not None and asked == []  # a host listed by hand: a plain GPU needs no nvidia-smi
    plain.release()
    small = pool.try_acquire(GpuNeed(1, model="Tesla T4"))
    assert small is not None and small.devices == ("1",) and asked == [1]
    small.release()
    # Now that the pool knows the devices, a plain request leaves the 80Gi one for a run that needs it.
    plain = pool.try_acquire(1)
    assert plain is not None and plain.devices == ("1",)
    big = pool.try_acquire(GpuNeed(1, memory_bytes=40 * 2**30))
    assert big is not None and big.devices == ("0",) and asked == [1]
    plain.release()
    big.release()
