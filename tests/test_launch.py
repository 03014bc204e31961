"""The launch scripts: --help prints their own usage, a missing variable stops them before any command runs."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["tpu_create.sh", "tpu_setup.sh", "tpu_run.sh", "gpu_run.sh"]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_and_missing_variables(script):
    path = os.path.join(ROOT, "launch", script)
    env = {k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE", "CONFIG", "WORKDIR", "ACCELERATOR")}
    out = subprocess.run(["bash", path, "--help"], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "Variables:" in out.stdout and "common.sh" not in out.stdout, out.stdout
    out = subprocess.run(["bash", path], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and out.stderr.startswith("error: set ") and out.stdout == "", (out.stdout, out.stderr)


def test_workdir_refuses_object_store_uris(tmp_path):
    from seal_jax.runtime.workdir import Workdir
    with pytest.raises(ValueError, match="gcsfuse"):
        Workdir("gs://bucket/run1")
    assert not os.path.exists("gs:")
