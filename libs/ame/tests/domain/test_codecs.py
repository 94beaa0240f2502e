"""Wire (proto) <-> domain conversions: every value survives the trip through bytes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ame import bus_messages, codecs
from ame.codecs import DecodeError
from ame.contracts.log.v1 import log_pb2
from ame.contracts.run.v1 import run_pb2
from ame.domain import (
    EXECUTOR_KINDS,
    ArtifactsSpec,
    DataSetRef,
    EnvVar,
    ExecutorRef,
    LogEnd,
    LogLine,
    Resources,
    RunSpec,
    RunState,
    SecretRef,
    TriggerKind,
)
from ame.domain.limits import MAX_TIMEOUT_SECONDS

# What RunSpec accepts: names as in ame.yml, environment keys as a shell takes them, and text a process
# environment and PostgreSQL can carry (no NUL, no lone surrogates).
_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}", fullmatch=True)
_env_keys = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,19}", fullmatch=True)
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
_text = st.text(_chars, max_size=40)
_int64 = st.integers(min_value=1, max_value=2**63 - 1)

run_specs = st.builds(
    RunSpec,
    project=_names,
    task=_names,
    command=st.text(
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=80
    ).filter(lambda s: s.strip() != ""),
    executor=st.builds(
        ExecutorRef,
        kind=st.sampled_from(EXECUTOR_KINDS),
        python_version=st.text(_chars, max_size=32),
        image=_text,
    ),
    environment=st.lists(st.builds(EnvVar, key=_env_keys, value=_text), max_size=5),
    secrets=st.lists(
        st.builds(SecretRef, key=st.text(_chars, min_size=1, max_size=20), inject_as=_env_keys, vault=_text),
        max_size=5,
    ),
    resources=st.builds(
        Resources,
        cpu_millis=st.none() | _int64,
        memory_bytes=st.none() | _int64,
        storage_bytes=st.none() | _int64,
        gpus=st.none() | st.integers(min_value=1, max_value=2**31 - 1),
        gpu_memory_bytes=st.none() | _int64,
    ),
    timeout_seconds=st.none()
    | st.floats(min_value=0, max_value=MAX_TIMEOUT_SECONDS, exclude_min=True, allow_nan=False),
    retries=st.integers(min_value=0, max_value=100),
    artifacts=st.builds(ArtifactsSpec, paths=st.lists(_text, max_size=4), save_changed_files=st.booleans()),
    data_sets=st.lists(st.builds(DataSetRef, name=_names, project=st.just("") | _names), max_size=3),
    project_version_id=_text,
    labels=st.dictionaries(_text, _text, max_size=5),
)


def _through_bytes(spec: RunSpec) -> RunSpec:
    data = codecs.run_spec_to_pb(spec).SerializeToString()
    return codecs.run_spec_from_pb(run_pb2.RunSpec.FromString(data))


@given(run_specs)
def test_run_spec_round_trips_through_proto_bytes(spec: RunSpec) -> None:
    assert _through_bytes(spec) == spec


def test_run_spec_round_trip_keeps_every_field() -> None:
    spec = RunSpec(
        project="vision",
        task="train",
        command="python train.py --epochs 3",
        executor=ExecutorRef(kind="poetry", python_version="3.12", image="ghcr.io/x/y:1"),
        environment=[EnvVar(key="A", value="1"), EnvVar(key="EMPTY", value=""), EnvVar(key="A", value="2")],
        secrets=[SecretRef(key="db-pass", inject_as="DB_PASS"), SecretRef(key="k", inject_as="K", vault="prod")],
        resources=Resources(cpu_millis=1500, memory_bytes=2 * 1024**3, storage_bytes=10**12, gpus=2),
        timeout_seconds=5400.5,
        retries=3,
        artifacts=ArtifactsSpec(paths=["model/", "*.onnx"], save_changed_files=True),
        project_version_id="0190a1b2-0000-7000-8000-000000000000",
        labels={"trigger": "schedule", "team": "ml"},
    )
    back = _through_bytes(spec)
    assert back == spec
    # Order of repeated fields is meaning (later env vars win), so it must be kept exactly.
    assert [(e.key, e.value) for e in back.environment] == [("A", "1"), ("EMPTY", ""), ("A", "2")]


def test_unset_optionals_travel_as_zero_and_come_back_unset() -> None:
    pb = codecs.run_spec_to_pb(RunSpec(command="true"))
    assert pb.timeout_seconds == 0.0 and pb.resources.cpu_millis == 0 and pb.resources.gpus == 0
    back = codecs.run_spec_from_pb(pb)
    assert back.timeout_seconds is None
    assert back.resources == Resources()


def test_zero_gpus_means_not_requested_on_the_wire() -> None:
    # The proto says "zero means not requested"; the domain's explicit 0 is the same request.
    assert _through_bytes(RunSpec(command="x", resources=Resources(gpus=0))).resources.gpus is None


def test_an_empty_wire_spec_gets_the_domain_defaults_for_names() -> None:
    spec = codecs.run_spec_from_pb(run_pb2.RunSpec(command="echo hi"))
    assert (spec.project, spec.task, spec.executor.kind) == ("default", "adhoc", "custom")


@pytest.mark.parametrize(
    ("pb", "fragment"),
    [
        (run_pb2.RunSpec(), "command"),
        (run_pb2.RunSpec(command="   "), "command must not be empty"),
        (run_pb2.RunSpec(command="x", executor=run_pb2.Executor(kind="conda")), "kind"),
        (run_pb2.RunSpec(command="x", retries=-1), "retries"),
        (run_pb2.RunSpec(command="x", retries=101), "retries"),
        (run_pb2.RunSpec(command="x", timeout_seconds=-1.0), "timeout_seconds"),
        (run_pb2.RunSpec(command="x", resources=run_pb2.Resources(cpu_millis=-5)), "cpu_millis"),
        (run_pb2.RunSpec(command="x", project="p" * 201), "project"),
        (run_pb2.RunSpec(command="x", environment=[run_pb2.EnvVar(key="", value="v")]), "key"),
        (run_pb2.RunSpec(command="x", secrets=[run_pb2.SecretRef(key="k")]), "inject_as"),
    ],
)
def test_invalid_spec_is_a_decode_error_naming_the_field(pb: run_pb2.RunSpec, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        codecs.run_spec_from_pb(pb)


# Enums ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(RunState))
def test_every_run_state_maps_both_ways(state: RunState) -> None:
    value = codecs.state_to_pb(state)
    assert run_pb2.RunState.Name(value) == f"RUN_STATE_{state.name}"
    assert codecs.state_from_pb(value) is state


def test_every_wire_run_state_except_unspecified_is_a_domain_state() -> None:
    wire = {v for v in run_pb2.RunState.values() if v != run_pb2.RUN_STATE_UNSPECIFIED}
    assert {codecs.state_to_pb(s) for s in RunState} == wire


@pytest.mark.parametrize("value", [run_pb2.RUN_STATE_UNSPECIFIED, 99, -1])
def test_unknown_run_state_is_a_decode_error(value: int) -> None:
    with pytest.raises(DecodeError, match="unknown run state"):
        codecs.state_from_pb(value)


@pytest.mark.parametrize("kind", list(TriggerKind))
def test_every_trigger_kind_maps_both_ways(kind: TriggerKind) -> None:
    value = codecs.trigger_to_pb(kind)
    assert run_pb2.TriggerKind.Name(value) == f"TRIGGER_KIND_{kind.name}"
    assert codecs.trigger_from_pb(value) is kind


def test_every_wire_trigger_kind_except_unspecified_is_a_domain_kind() -> None:
    wire = {v for v in run_pb2.TriggerKind.values() if v != run_pb2.TRIGGER_KIND_UNSPECIFIED}
    assert {codecs.trigger_to_pb(k) for k in TriggerKind} == wire


def test_unspecified_trigger_reads_as_api() -> None:
    assert codecs.trigger_from_pb(run_pb2.TRIGGER_KIND_UNSPECIFIED) is TriggerKind.API


# Run events ----------------------------------------------------------------------------------------

_AT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


@pytest.mark.parametrize("exit_code", [0, None, 1, 137, -9])
def test_state_changed_round_trip_keeps_exit_code_zero_distinct_from_none(exit_code: int | None) -> None:
    data = codecs.state_changed_pb(
        "run-1", 2, RunState.FAILED, exit_code, "boom", launcher_id="l-1", project="p", task="t", at=_AT
    ).SerializeToString()
    event = codecs.parse_state_changed(data)
    assert event == codecs.StateEvent(
        run_id="run-1",
        attempt=2,
        state=RunState.FAILED,
        exit_code=exit_code,
        reason="boom",
        at=_AT,
        launcher_id="l-1",
    )


def test_state_changed_time_is_normalised_to_utc() -> None:
    local = datetime(2026, 3, 4, 7, 6, 7, tzinfo=timezone(timedelta(hours=2)))
    data = codecs.state_changed_pb("r", 1, RunState.RUNNING, None, "", at=local).SerializeToString()
    event = codecs.parse_state_changed(data)
    assert event.at == local and event.at.utcoffset() == timedelta(0)


@pytest.mark.parametrize("state", list(RunState))
def test_state_changed_round_trip_for_every_state(state: RunState) -> None:
    data = codecs.state_changed_pb("r", 1, state, None, "").SerializeToString()
    assert codecs.parse_state_changed(data).state is state


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\xff\xff\xff", "undecodable"),
        (b"", "without a run id"),
        (run_pb2.RunStateChanged(attempt=1, state=run_pb2.RUN_STATE_RUNNING).SerializeToString(), "run id"),
        (run_pb2.RunStateChanged(run_id="r", attempt=1).SerializeToString(), "unknown run state"),
    ],
)
def test_bad_state_events_are_decode_errors(data: bytes, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        codecs.parse_state_changed(data)


# Logs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", ["stdout", "stderr", "system"])
def test_log_line_round_trip(stream: str) -> None:
    line = LogLine(seq=41, stream=stream, text="épique ✓ \t tab", at=_AT)
    data = codecs.log_line_to_pb(line).SerializeToString()
    assert codecs.log_line_from_pb(log_pb2.LogLine.FromString(data)) == line


@given(
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    stream=st.sampled_from(["stdout", "stderr", "system"]),
    text=st.text(),
)
def test_log_line_round_trip_any_text(seq: int, stream: str, text: str) -> None:
    line = LogLine(seq=seq, stream=stream, text=text, at=_AT)
    data = codecs.log_line_to_pb(line).SerializeToString()
    assert codecs.log_line_from_pb(log_pb2.LogLine.FromString(data)) == line


@pytest.mark.parametrize("exit_code", [0, None, 3])
@pytest.mark.parametrize("state", [RunState.SUCCEEDED, RunState.FAILED, RunState.LOST])
def test_log_end_round_trip(state: RunState, exit_code: int | None) -> None:
    end = LogEnd(state=state, exit_code=exit_code, reason="why", total_lines=12)
    data = codecs.log_end_to_pb(end).SerializeToString()
    assert codecs.log_end_from_pb(log_pb2.LogEnd.FromString(data)) == end


def test_log_chunk_round_trip_and_message_ids() -> None:
    lines = [LogLine(seq=7 + i, stream="stdout", text=f"l{i}", at=_AT) for i in range(3)]
    chunk = log_pb2.LogChunk(run_id="r", attempt=2, lines=[codecs.log_line_to_pb(x) for x in lines])
    parsed = codecs.parse_log_chunk(chunk.SerializeToString())
    assert [codecs.log_line_from_pb(x) for x in parsed.lines] == lines
    assert bus_messages.log_chunk_msg_id("r", 2, parsed) == "log:r:2:7"
    end = log_pb2.LogChunk(run_id="r", attempt=2, end=codecs.log_end_to_pb(LogEnd(state=RunState.SUCCEEDED)))
    assert bus_messages.log_chunk_msg_id("r", 2, end) == "log:r:2:end"
    with pytest.raises(DecodeError, match="undecodable log chunk"):
        codecs.parse_log_chunk(b"\xff\xff\xff")


@pytest.mark.parametrize(
    "args", [None, {"ref": "main", "n": [1, 2.5, None, True]}, ["a", "\u00e9\U0001f600"], "text", 0]
)
def test_task_arguments_survive_the_bus(args: object) -> None:
    spec = RunSpec(command="true", args=args)
    pb = codecs.run_spec_to_pb(spec)
    assert pb.args_json.isascii()
    assert codecs.run_spec_from_pb(pb).args == args


def test_task_arguments_over_the_limit_are_refused() -> None:
    from pydantic import ValidationError

    from ame.domain.limits import MAX_TASK_ARGS_BYTES

    with pytest.raises(ValidationError, match="task arguments are"):
        RunSpec(command="true", args={"pad": "x" * MAX_TASK_ARGS_BYTES})


@pytest.mark.parametrize("args", [{"a\x00": 1}, {"a": ["ok", "b\x00"]}, "\x00", ["\ud800"], {"\udc00": 1}])
def test_task_arguments_jsonb_cannot_hold_are_refused(args: object) -> None:
    # The registry keeps arguments as jsonb, which holds no NUL or lone surrogate: refused here, they get a 4xx
    # instead of a 500.
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"NUL characters|lone surrogate"):
        RunSpec(command="true", args=args)


def test_arguments_that_are_not_json_are_a_decode_error() -> None:
    pb = codecs.run_spec_to_pb(RunSpec(command="true"))
    pb.args_json = "{nope"
    with pytest.raises(codecs.DecodeError, match="args_json"):
        codecs.run_spec_from_pb(pb)
