"""What a client may send, defined once for the REST schemas, the gRPC edge and the domain models.

Every limit here is chosen so that an accepted value also fits the wire (protobuf int32/int64, one bus
message of 1 MiB) and the database (PostgreSQL text and jsonb carry no NUL, bigint columns stop at 2**63-1).
Anything outside them is refused at the edge with a message, never found out later as a 500.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# Names (project, task) as they appear in YAML, REST paths and filters.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_NAME_CHARS = 200
# A loop name, or empty for an organisation's own queue.
LOOP_PATTERN = r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*)?$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_ENV_KEY_CHARS = 256

# Free text. A run travels as one bus message, so the command and environment stay far below 1 MiB.
MAX_COMMAND_BYTES = 128 * 1024
MAX_ENV_VARS = 500
MAX_ENV_VALUE_BYTES = 32 * 1024
MAX_SECRET_KEY_CHARS = 1024
MAX_VAULT_CHARS = 256
MAX_LABELS = 64
MAX_LABEL_KEY_CHARS = 63  # a Kubernetes label name
MAX_LABEL_VALUE_CHARS = 256
MAX_IMAGE_CHARS = 1024
MAX_PYTHON_VERSION_CHARS = 32
MAX_ARTIFACT_PATHS = 1000
MAX_DATA_SETS = 100
MAX_ARTIFACT_PATH_CHARS = 4096  # PATH_MAX on Linux
MAX_PROJECT_VERSION_ID_CHARS = 64
# Task arguments (a webhook's payload, `--args`): JSON carried with the run. The launch command that carries them
# must fit one NATS message (1 MiB by default) beside the rest of the spec. Up to MAX_TASK_ARGS_ENV_BYTES they
# are also in the environment as AME_TASK_ARGS; always in the file AME_TASK_ARGS_FILE names.
MAX_TASK_ARGS_BYTES = 512 * 1024
MAX_TASK_ARGS_ENV_BYTES = 32 * 1024
# A cancel reason is shown in listings and carried by every event of the run's end.
MAX_REASON_CHARS = 2000
# The longest reason stored for a run's end (the registry, the log archive): a launcher's or the reconciler's
# reason may be longer than one a person types; longer ones arriving on the bus are cut, not refused.
MAX_STORED_REASON_CHARS = 4096
MAX_IDEMPOTENCY_KEY_CHARS = 200
# Run ids are UUIDs (36 characters); anything longer cannot name a run.
MAX_RUN_ID_CHARS = 64
# A run id prefix (`ame task logs 0190ab`) needs enough digits to be worth a lookup.
MIN_RUN_ID_PREFIX_DIGITS = 4

# Numbers.
# A week is far beyond any sensible single run; larger values are almost always a unit slip.
MAX_TIMEOUT_SECONDS = 7 * 86400.0
MAX_RETRIES = 100
MAX_PAGE_SIZE = 1000
MAX_LOG_SEQ = INT64_MAX  # line numbers are bigint in the archive


def check_text(value: str, what: str = "text") -> str:
    """Refuse text a process environment, PostgreSQL or UTF-8 cannot carry: NUL bytes and lone surrogates."""
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must be valid Unicode text (it holds a lone surrogate)") from None
    return value


def _clean(value: str) -> str:
    return check_text(value, "text")


def printable(value: str) -> str:
    """`value` made safe to echo back in an error: lone surrogates escaped, so it always encodes as UTF-8."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


# A string that can be stored and sent anywhere; give it a length cap where it is used (Field(max_length=...)).
CleanText = Annotated[str, AfterValidator(_clean)]

# A filter by name: a name, or empty for "any" (the gRPC default of an unset string).
NameFilter = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS, pattern=r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]*)?$")]
Reason = Annotated[str, StringConstraints(max_length=MAX_REASON_CHARS), AfterValidator(_clean)]
RunIdText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_RUN_ID_CHARS), AfterValidator(_clean)]
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY_CHARS), AfterValidator(_clean)
]
ArtifactPath = Annotated[str, StringConstraints(max_length=MAX_ARTIFACT_PATH_CHARS), AfterValidator(_clean)]
PageToken = Annotated[str, StringConstraints(max_length=MAX_RUN_ID_CHARS), AfterValidator(_clean)]
PageSize = Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)]
LogSeq = Annotated[int, Field(ge=0, le=MAX_LOG_SEQ)]
# A run id prefix as typed; its digits are checked where it is used (ame.domain.ids.prefix_digits says why not).
RunIdPrefix = Annotated[str, StringConstraints(max_length=MAX_RUN_ID_CHARS), AfterValidator(_clean)]
# A task listing's page token: the project name and the task's position the page ended at.
TaskPageToken = Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS + 16), AfterValidator(_clean)]
