"""The installed `d2sm` script as its own process, as a user runs it (README examples)."""

from __future__ import annotations

import json
import os

from .helpers import d2sm_process, detections, photo


def test_invoke_then_show_from_the_shell(deployed, aws_env, tmp_path):
    image = photo(tmp_path / "balloons.jpg")
    deployed.canned_results([json.dumps(detections())])
    env = {"PATH": os.environ["PATH"], **aws_env}

    invoked = d2sm_process("invoke", image, env=env)
    shown = d2sm_process("show", tmp_path / "balloons.jpg.json", env=env)

    assert (invoked.returncode, invoked.stderr) == (0, "")
    assert invoked.stdout.splitlines()[0] == str(tmp_path / "balloons.jpg.json")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert (tmp_path / "balloons.jpg.overlay.png").is_file()


def test_bad_command_line_is_one_line_and_exit_2(tmp_path):
    result = d2sm_process("invoke", env={"PATH": os.environ["PATH"]})
    assert result.returncode == 2
    assert result.stderr == "d2sm invoke: error: the following arguments are required: path\n"


def test_arguments_after_double_dash_belong_to_register_only(tmp_path):
    result = d2sm_process("show", tmp_path, "--", "--x", env={"PATH": os.environ["PATH"]})
    assert (result.returncode, result.stderr) == (
        2,
        "d2sm: error: only register takes arguments after --, show does not\n",
    )
