"""The launch scripts (launch/*.sh), run as a user would, in dry-run mode (DRY_RUN=1 prints every command and runs
none) and, where they act on this host, for real:

- every script has --help and stops on a missing variable before printing a command;
- tpu_create.sh picks the TPU software version from the accelerator type, as Google's table "TPU software
  versions" (https://cloud.google.com/tpu/docs/runtimes) gives it: v4 and older tpu-ubuntu2204-base, v5e
  v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e;
- HF_TOKEN / OPENAI_API_KEY set in the environment never appear in any script's output, nor on any command line
  it runs (a fake gcloud records them): the TPU run gets them in a 0600 file, sourced by launch/worker.sh;
- the evaluate launchers pass --out (seal_jax.cli.evaluate's flag), never --workdir;
- a detached run (launch/worker.sh) starts in its own session, returns at once, writes one log per worker,
  records its exit status, refuses a second start, and stops on request;
- tpu_resume.sh recreates a preempted spot slice and reruns the same train command in the same workdir.
"""
import os
import re
import stat
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, "launch")
HF = "hf_tEsT-t0ken-9f3a"
OPENAI = "sk-pr0j 'q\"uo$te-7c1e"  # spaces, quotes and $: a value shell quoting could break or leak
VARIABLES = ("TPU_NAME", "ZONE", "ACCELERATOR", "CONFIG", "WORKDIR", "OUT", "DATA", "BUCKET", "EXTRA", "RUN",
             "HF_TOKEN", "OPENAI_API_KEY", "DRY_RUN", "RUNTIME", "CMD", "SLURM_PROCID", "SLURM_GPUS_ON_NODE",
             "SLURM_JOB_ID", "SLURM_SUBMIT_DIR", "SEAL_JAX_LOGS", "WORKER_ID", "SEAL_JAX_SECRETS", "REMOTE_DIR",
             "PROJECT", "COORDINATOR", "CREATE_FLAGS", "MOUNT", "PYTHON")
TPU = dict(TPU_NAME="seal", ZONE="us-west4-a")

# (script, the variables it needs): everything a user could run.
SCRIPTS = {
    "tpu_create.sh": dict(TPU, ACCELERATOR="v5litepod-8"),
    "tpu_setup.sh": dict(TPU),
    "tpu_stage.sh": dict(TPU, DATA="gs://my-bucket/seal-data"),
    "tpu_run.sh": dict(TPU, CONFIG="configs/knowledge.py:paper", WORKDIR="/mnt/seal/knowledge"),
    "tpu_evaluate.sh": dict(TPU, CONFIG="configs/knowledge_eval.py:paper", OUT="/mnt/seal/table2"),
    "tpu_logs.sh": dict(TPU),
    "tpu_status.sh": dict(TPU),
    "tpu_stop.sh": dict(TPU),
    "tpu_delete.sh": dict(TPU),
    "tpu_resume.sh": dict(TPU, ACCELERATOR="v5litepod-8", BUCKET="my-bucket", CONFIG="configs/knowledge.py:paper",
                          WORKDIR="/mnt/seal/knowledge"),
    "gpu_run.sh": dict(CONFIG="configs/arc.py:paper", WORKDIR="runs/arc"),
    "gpu_evaluate.sh": dict(CONFIG="configs/arc_eval.py:paper", OUT="runs/arc_eval"),
    "gpu_slurm.sh": dict(CONFIG="configs/knowledge.py:paper", WORKDIR="/shared/knowledge"),
    "install.sh": dict(EXTRA="tpu"),
    "stage.sh": dict(DATA="gs://my-bucket/seal-data"),
}


def clean_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    env["SEAL_JAX_LOGS"] = str(tmp_path / "logs")
    env.update(extra)
    return env


def launch(script, *args, env):
    return subprocess.run(["bash", os.path.join(LAUNCH, script), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)


def commands(out: str) -> list[str]:
    """The commands a run printed ("+ cmd" lines)."""
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")]


def fake_gcloud(tmp_path):
    """A `gcloud` on PATH that records its arguments (one call per line) and keeps a copy of every file `scp`
    sends, with its mode, so a test sees what would have reached the workers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    calls, sent = tmp_path / "gcloud_calls", tmp_path / "sent"
    sent.mkdir(exist_ok=True)
    (bin_dir / "gcloud").write_text(f"""#!/usr/bin/env bash
printf '%s\\n' "$*" >> {calls}
if [ "$4" = scp ]; then
  for a in "$@"; do
    if [ -f "$a" ]; then cp -p "$a" {sent}/; stat -c '%a %n' "$a" >> {sent}/modes; fi
  done
fi
""")
    (bin_dir / "gcloud").chmod(0o755)
    return str(bin_dir), calls, sent


@pytest.mark.parametrize("script", sorted(SCRIPTS) + ["gpu_setup.sh", "worker.sh"])
def test_help_and_missing_variables(script, tmp_path):
    env = clean_env(tmp_path)
    out = launch(script, "--help", env=env)
    assert out.returncode == 0 and "Variables:" in out.stdout and "common.sh" not in out.stdout, out.stdout
    assert "#SBATCH" not in out.stdout
    if script in SCRIPTS:
        out = launch(script, env=env)
        assert out.returncode == 2 and out.stderr.startswith("error: set ") and out.stdout == "", (out.stdout,
                                                                                                   out.stderr)


# Google's "TPU software versions" table, PyTorch and JAX (https://cloud.google.com/tpu/docs/runtimes).
RUNTIMES = {"v4-8": "tpu-ubuntu2204-base", "v4-32": "tpu-ubuntu2204-base", "v3-8": "tpu-ubuntu2204-base",
            "v5litepod-8": "v2-alpha-tpuv5-lite", "v5litepod-16": "v2-alpha-tpuv5-lite", "v5p-8": "v2-alpha-tpuv5",
            "v5p-128": "v2-alpha-tpuv5", "v6e-8": "v2-alpha-tpuv6e", "v6e-64": "v2-alpha-tpuv6e"}


@pytest.mark.parametrize("accelerator", sorted(RUNTIMES))
def test_runtime_version_follows_the_chip(accelerator, tmp_path):
    out = launch("tpu_create.sh", "--spot", env=clean_env(tmp_path, DRY_RUN="1", ACCELERATOR=accelerator, **TPU))
    assert out.returncode == 0, out.stderr
    [create] = commands(out.stdout)
    assert create == (f"gcloud compute tpus tpu-vm create seal --zone=us-west4-a --accelerator-type={accelerator} "
                      f"--version={RUNTIMES[accelerator]} --spot")
    if not accelerator.startswith(("v3", "v4")):
        assert "tpu-ubuntu2204-base" not in out.stdout


def test_runtime_override_and_unknown_accelerators(tmp_path):
    out = launch("tpu_create.sh", env=clean_env(tmp_path, DRY_RUN="1", ACCELERATOR="v6e-8", RUNTIME="v2-alpha-tpuv6e-x",
                                                **TPU))
    assert "--version=v2-alpha-tpuv6e-x" in out.stdout
    for accelerator, hint in (("v5e-8", "v5litepod-8"), ("tpu9-8", "v5litepod-N")):
        out = launch("tpu_create.sh", env=clean_env(tmp_path, DRY_RUN="1", ACCELERATOR=accelerator, **TPU))
        assert out.returncode == 2 and out.stdout == "" and len(out.stderr.splitlines()) == 1, out
        assert out.stderr.startswith(f"error: ACCELERATOR={accelerator}") and hint in out.stderr


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_dry_run_prints_commands_and_runs_none(script, tmp_path):
    """DRY_RUN=1 with a recording gcloud on PATH: commands are printed, gcloud is never called, nothing is made."""
    bin_dir, calls, _ = fake_gcloud(tmp_path)
    env = clean_env(tmp_path, DRY_RUN="1", PATH=f"{bin_dir}:{os.environ['PATH']}", HF_TOKEN=HF,
                    OPENAI_API_KEY=OPENAI, **SCRIPTS[script])
    out = launch(script, "--config.seed=3", env=env)
    assert out.returncode == 0, out.stderr
    assert commands(out.stdout), out.stdout
    assert not calls.exists(), calls.read_text()
    assert not (tmp_path / "logs").exists()  # worker.sh made no log directory


@pytest.mark.parametrize("script", sorted(SCRIPTS) + ["gpu_setup.sh"])
def test_secrets_never_appear_in_any_output(script, tmp_path):
    env = clean_env(tmp_path, DRY_RUN="1", HF_TOKEN=HF, OPENAI_API_KEY=OPENAI, **SCRIPTS.get(script, {}))
    out = launch(script, "--config.seed=3", env=env)
    assert out.returncode == 0, out.stderr
    for secret in (HF, OPENAI):
        for piece in (secret, secret[:8], secret[-6:]):
            assert piece not in out.stdout + out.stderr, script
    if script in ("tpu_run.sh", "tpu_evaluate.sh", "tpu_resume.sh", "gpu_run.sh", "gpu_evaluate.sh", "gpu_slurm.sh"):
        assert "HF_TOKEN=<set> OPENAI_API_KEY=<set>" in out.stdout
        env = clean_env(tmp_path, DRY_RUN="1", HF_TOKEN=HF, **SCRIPTS[script])
        assert "HF_TOKEN=<set> OPENAI_API_KEY=<unset>" in launch(script, env=env).stdout


def test_tpu_run_forwards_secrets_in_a_0600_file(tmp_path):
    """For real, against a recording gcloud: the secrets reach the workers in a 0600 file that bash reads back to
    the exact values; no gcloud argument and no printed line holds them; the local copy is removed."""
    bin_dir, calls, sent = fake_gcloud(tmp_path)
    env = clean_env(tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", HF_TOKEN=HF, OPENAI_API_KEY=OPENAI,
                    TMPDIR=str(tmp_path), **SCRIPTS["tpu_run.sh"])
    out = launch("tpu_run.sh", "--config.rl.iterations=2", env=env)
    assert out.returncode == 0, out.stderr
    recorded = calls.read_text()
    for secret in (HF, OPENAI):
        assert secret not in recorded and secret not in out.stdout + out.stderr
    [mode_line] = (sent / "modes").read_text().splitlines()
    mode, local = mode_line.split(" ", 1)
    assert mode == "600" and not os.path.exists(local)  # sent 0600, then deleted here
    copy = sent / os.path.basename(local)
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    read_back = subprocess.run(["bash", "-c", f'. {copy}; printf "%s\\n%s" "$HF_TOKEN" "$OPENAI_API_KEY"'],
                               capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert read_back.stdout == f"{HF}\n{OPENAI}"
    scp = [c for c in recorded.splitlines() if " scp " in f" {c} "]
    assert len(scp) == 1 and scp[0].endswith("seal:.seal-jax/secrets.env --zone=us-west4-a --worker=all")
    start = recorded.splitlines()[-1]
    assert "--worker=all" in start and "SEAL_JAX_SECRETS=~/.seal-jax/secrets.env bash launch/worker.sh start train" \
        in start


def test_train_launchers_run_train_with_the_workdir_detached_on_every_worker(tmp_path):
    out = launch("tpu_run.sh", "--config.rl.iterations=2", env=clean_env(tmp_path, DRY_RUN="1", **SCRIPTS["tpu_run.sh"]))
    start = commands(out.stdout)[-1]
    assert start.startswith("gcloud compute tpus tpu-vm ssh seal --zone=us-west4-a --worker=all '--command=cd seal-jax")
    assert ("bash launch/worker.sh start train env SEAL_JAX_DISTRIBUTED=1 .venv/bin/python -m seal_jax.cli.train "
            "--config=configs/knowledge.py:paper --workdir=/mnt/seal/knowledge --config.rl.iterations=2'") in start
    logs = commands(launch("tpu_logs.sh", env=clean_env(tmp_path, DRY_RUN="1", **TPU)).stdout)
    assert logs == ["gcloud compute tpus tpu-vm ssh seal --zone=us-west4-a --worker=0 "
                    "'--command=cd seal-jax && FOLLOW=1 TAIL=50 bash launch/worker.sh logs train'"]
    status = commands(launch("tpu_status.sh", env=clean_env(tmp_path, DRY_RUN="1", RUN="evaluate", **TPU)).stdout)
    assert status[-1].endswith("--worker=all '--command=cd seal-jax && bash launch/worker.sh status evaluate'")
    for script in ("tpu_run.sh", "gpu_run.sh", "gpu_slurm.sh"):
        out = launch(script, env=clean_env(tmp_path, DRY_RUN="1", **dict(SCRIPTS[script], WORKDIR="gs://b/run1")))
        assert out.returncode == 2 and "mount the bucket" in out.stderr and out.stdout == ""


@pytest.mark.parametrize("script,extra", [("tpu_evaluate.sh", {}), ("gpu_evaluate.sh", {}),
                                          ("gpu_slurm.sh", {"CMD": "evaluate", "OUT": "/shared/table2"})])
def test_evaluate_launchers_pass_out_not_workdir(script, extra, tmp_path):
    variables = dict(SCRIPTS[script], **extra)
    out = launch(script, "--config.generator_workdir=/mnt/seal/knowledge",
                 env=clean_env(tmp_path, DRY_RUN="1", **variables))
    run = commands(out.stdout)[-1]
    assert "-m seal_jax.cli.evaluate --config=" in run and f"--out={variables['OUT']}" in run
    assert "--workdir" not in run.replace("--config.generator_workdir", "")


def test_evaluate_and_train_define_the_flags_the_launchers_pass():
    """The launchers' flags against the CLI modules' own flag definitions (absl)."""
    code = ("import sys; from absl import flags; import importlib; m = importlib.import_module(sys.argv[1]); "
            "m.define_flags(); print(' '.join(sorted(flags.FLAGS)))")
    for module, passes, lacks in (("seal_jax.cli.evaluate", ("config", "out"), "workdir"),
                                  ("seal_jax.cli.train", ("config", "workdir"), "out")):
        out = subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-c", code, module], capture_output=True,
                             text=True, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=300)
        defined = set(out.stdout.split())
        assert set(passes) <= defined and lacks not in defined, (module, out.stderr[-2000:])


def wait_for(path, seconds=10.0):
    end = time.time() + seconds
    while not os.path.exists(path) and time.time() < end:
        time.sleep(0.05)
    assert os.path.exists(path), path


def worker(*args, env):
    return launch("worker.sh", *args, env=env)


def test_detached_run_has_its_own_session_a_log_per_worker_and_an_exit_status(tmp_path):
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"export HF_TOKEN={HF}\n")
    secrets.chmod(0o600)
    env = clean_env(tmp_path, WORKER_ID="worker-3", SEAL_JAX_SECRETS=str(secrets))
    t0 = time.time()
    out = worker("start", "train", "bash", "-c", 'sleep 1.5; echo "token length ${#HF_TOKEN}"; pwd', env=env)
    assert out.returncode == 0 and time.time() - t0 < 1.5, out.stderr  # returned before the command ended
    run_dir = tmp_path / "logs" / "train"
    pid = int((run_dir / "worker-3.pid").read_text())
    assert os.getsid(pid) == pid  # a session of its own: a dropped ssh's hangup does not reach it
    assert worker("status", "train", env=env).stdout.startswith(f"worker-3 train running pid {pid}")
    again = worker("start", "train", "true", env=env)
    assert again.returncode == 2 and "already running on worker-3" in again.stderr
    wait_for(run_dir / "worker-3.exit")
    assert (run_dir / "worker-3.exit").read_text().strip() == "0"
    assert worker("status", "train", env=env).stdout.startswith("worker-3 train exited 0")
    log = (run_dir / "worker-3.log").read_text()
    assert f"token length {len(HF)}\n{ROOT}\n" in log and HF not in log  # sourced, run in the repo, not logged
    logs = worker("logs", "train", env=dict(env, TAIL="2")).stdout.splitlines()
    assert logs[0] == f"+ tail -n 2 {run_dir}/worker-3.log" and logs[1] == ROOT and logs[2].endswith(" exit 0")
    assert sorted(os.listdir(run_dir)) == ["worker-3.exit", "worker-3.log", "worker-3.pid"]


def test_detached_run_stops_and_records_the_signal(tmp_path):
    env = clean_env(tmp_path, WORKER_ID="worker-0")
    assert worker("start", "long", "sleep", "60", env=env).returncode == 0
    stop = worker("stop", "long", env=env)
    assert stop.returncode == 0 and re.fullmatch(r"\+ kill -TERM -- -\d+\n", stop.stdout)
    wait_for(tmp_path / "logs" / "long" / "worker-0.exit")
    assert worker("status", "long", env=env).stdout.startswith("worker-0 long exited 143")  # 128 + SIGTERM
    assert worker("status", "other", env=env).stdout == "worker-0 other not-started\n"


def test_gpu_run_starts_detached_on_this_host_with_the_callers_secrets(tmp_path):
    """gpu_run.sh for real, with a stand-in for python that prints its arguments and the secrets' lengths."""
    fake = tmp_path / "python"
    fake.write_text('#!/usr/bin/env bash\necho "args: $*"; echo "lengths ${#HF_TOKEN} ${#OPENAI_API_KEY}"\n')
    fake.chmod(0o755)
    env = clean_env(tmp_path, PYTHON=str(fake), HF_TOKEN=HF, OPENAI_API_KEY=OPENAI, WORKER_ID="gpu-host",
                    **SCRIPTS["gpu_run.sh"])
    out = launch("gpu_run.sh", "--config.rl.samples=15", env=env)
    assert out.returncode == 0 and HF not in out.stdout + out.stderr and OPENAI not in out.stdout + out.stderr
    wait_for(tmp_path / "logs" / "train" / "gpu-host.exit")
    log = (tmp_path / "logs" / "train" / "gpu-host.log").read_text()
    assert ("args: -m seal_jax.cli.train --config=configs/arc.py:paper --workdir=runs/arc --config.rl.samples=15\n"
            f"lengths {len(HF)} {len(OPENAI)}\n") in log
    assert HF not in log and OPENAI not in log
    under_srun = launch("gpu_run.sh", env=dict(env, SLURM_PROCID="0"))
    assert under_srun.returncode == 2 and "gpu_slurm.sh" in under_srun.stderr


def test_slurm_runs_one_process_per_node_with_all_its_gpus(tmp_path):
    out = launch("gpu_slurm.sh", "--config.mesh.fsdp=1",
                 env=clean_env(tmp_path, DRY_RUN="1", SLURM_GPUS_ON_NODE="4", SLURM_JOB_ID="77",
                               **SCRIPTS["gpu_slurm.sh"]))
    srun = commands(out.stdout)[-1]
    logs = tmp_path / "logs" / "slurm-77"
    assert srun == (f"srun --kill-on-bad-exit=1 --ntasks-per-node=1 --output={logs}/task-%t.log env "
                    "SEAL_JAX_DISTRIBUTED=1 JAX_LOCAL_DEVICE_IDS=0,1,2,3 XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 "
                    ".venv/bin/python -m seal_jax.cli.train --config=configs/knowledge.py:paper "
                    "--workdir=/shared/knowledge --config.mesh.fsdp=1")
    with open(os.path.join(LAUNCH, "gpu_slurm.sh")) as f:
        header = [line for line in f if line.startswith("#SBATCH")]
    assert "#SBATCH --ntasks-per-node=1\n" in header and "#SBATCH --gpus-per-node=8\n" in header


def test_resume_recreates_the_preempted_spot_slice_and_reruns_the_same_train(tmp_path):
    variables = dict(SCRIPTS["tpu_resume.sh"], DATA="gs://my-bucket/seal-data")
    out = launch("tpu_resume.sh", "--config.rl.iterations=2", env=clean_env(tmp_path, DRY_RUN="1", **variables))
    assert out.returncode == 0, out.stderr
    cmds = commands(out.stdout)
    steps = [next(i for i, c in enumerate(cmds) if pattern in c) for pattern in (
        "tpu-vm describe seal", "tpu-vm delete seal --zone=us-west4-a --quiet",
        "tpu-vm create seal --zone=us-west4-a --accelerator-type=v5litepod-8 --version=v2-alpha-tpuv5-lite --spot",
        "EXTRA=tpu BUCKET=my-bucket MOUNT=/mnt/seal bash launch/install.sh",
        "DATA=gs://my-bucket/seal-data bash launch/stage.sh",
        "worker.sh start train env SEAL_JAX_DISTRIBUTED=1 .venv/bin/python -m seal_jax.cli.train "
        "--config=configs/knowledge.py:paper --workdir=/mnt/seal/knowledge --config.rl.iterations=2'")]
    assert steps == sorted(steps)
    off_bucket = launch("tpu_resume.sh", env=clean_env(tmp_path, DRY_RUN="1", **dict(variables, WORKDIR="/home/me/run")))
    assert off_bucket.returncode == 2 and "not under the bucket mount /mnt/seal" in off_bucket.stderr


def test_staging_copies_seals_files_and_names_the_missing_ones(tmp_path):
    data = tmp_path / "seal-data"
    data.mkdir()
    (data / "squad_val.json").write_text("[]")
    out = launch("tpu_stage.sh", env=clean_env(tmp_path, DRY_RUN="1", DATA=str(data), **TPU))
    assert commands(out.stdout)[-1] == (f"gcloud compute tpus tpu-vm scp {data}/squad_val.json "
                                        "seal:seal-jax/data/squad/ --zone=us-west4-a --worker=all")
    assert "squad_train.json: not found" in out.stderr and "gpt4_1_val.json: not found" in out.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    out = launch("tpu_stage.sh", env=clean_env(tmp_path, DRY_RUN="1", DATA=str(empty), **TPU))
    assert out.returncode == 2 and "holds none of squad_train.json squad_val.json gpt4_1_val.json" in out.stderr


def test_setup_installs_the_tpu_extra_and_gcsfuse_for_a_bucket(tmp_path):
    out = launch("tpu_setup.sh", env=clean_env(tmp_path, DRY_RUN="1", BUCKET="gs://my-bucket", **TPU))
    assert ("'--command=mkdir -p seal-jax && tar xzf seal-jax.tar.gz -C seal-jax && cd seal-jax && EXTRA=tpu "
            "BUCKET=gs://my-bucket MOUNT=/mnt/seal bash launch/install.sh'") in commands(out.stdout)[-1]
    install = commands(launch("install.sh", env=clean_env(tmp_path, DRY_RUN="1", EXTRA="tpu", BUCKET="gs://my-bucket",
                                                          PYTHON="python3")).stdout)
    assert ".venv/bin/python -m pip install -q -e '.[tpu]'" in install
    assert install[-1] == "gcsfuse --implicit-dirs my-bucket /mnt/seal"
    if not any(os.access(os.path.join(d, "gcsfuse"), os.X_OK) for d in os.environ["PATH"].split(os.pathsep)):
        assert "sudo apt-get install -y -q gcsfuse" in install


def test_workdir_refuses_object_store_uris(tmp_path):
    from seal_jax.runtime.workdir import Workdir
    with pytest.raises(ValueError, match="gcsfuse"):
        Workdir("gs://bucket/run1")
    assert not os.path.exists("gs:")
