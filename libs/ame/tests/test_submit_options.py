"""`ame runs submit`: an option AME does not know is an error, never the start of the command to run."""

from __future__ import annotations

from click.testing import CliRunner

from ame.cli.main import cli


def test_unknown_option_before_the_command_is_refused_and_nothing_is_submitted() -> None:
    # The target is a closed port: were the option taken as the command, the CLI would try to submit it there
    # and fail with a connection error instead of the usage error asserted here.
    result = CliRunner().invoke(
        cli, ["runs", "submit", "--detach", "echo", "hi"], env={"AME_GRPC_TARGET": "127.0.0.1:9"}
    )

    assert result.exit_code == 2, result.output
    assert "No such option '--detach'" in result.output
