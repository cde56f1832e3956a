"""
Build the wheel, install it into a clean virtualenv (not editable) and run the demo DAG from it.

What this proves, in order:

1. ``python -m build`` makes a wheel and an sdist, and ``twine check --strict`` accepts both.
2. The wheel installs into a fresh virtualenv next to ``apache-airflow==<pinned>`` with the committed
   constraints file (pip may take packages from its cache; nothing is installed from this checkout).
3. From that virtualenv, with the working directory outside the checkout: the provider is imported from
   the virtualenv's site-packages, Airflow lists it, the JSON schemas and sample images are installed.
4. ``airflow dags test apicore_describe_images`` (the demo DAG, copied alone into a temporary DAGs
   folder) describes the *installed* sample images against the emulator started from the wheel's
   ``apicore-emulator`` script; the manifest lists every image as SUCCESS with four prompts.

Usage: ``python scripts/check_wheel.py [--keep] [--workdir DIR]``. Exit 0 on success. Takes about
2-3 minutes on 2 cores with a warm pip cache.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
AIRFLOW_VERSION = os.environ.get("AIRFLOW_VERSION", "3.3.2")
DEMO_DAG = REPO / "dags" / "apicore_describe_images.py"


class CheckFailed(Exception):
    """One step of the wheel check failed; the message says which and shows the output."""


def step(message: str) -> None:
    print(f"[check_wheel] {message}", flush=True)


def run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run a command; return its output, or raise CheckFailed with the tail of it."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.splitlines()[-40:])
        raise CheckFailed(f"`{' '.join(cmd[:4])} ...` exited {proc.returncode}:\n{tail}")
    return proc.stdout


def base_python() -> str:
    """The interpreter the clean virtualenv is made from (the one behind this virtualenv, if any)."""
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(base) if base.exists() else sys.executable


def constraints_file() -> Path | None:
    path = (
        REPO / "constraints" / f"airflow-{AIRFLOW_VERSION}-py{sys.version_info[0]}.{sys.version_info[1]}.txt"
    )
    return path if path.exists() else None


def build(dist: Path) -> Path:
    """Build sdist + wheel into ``dist``, twine-check them, return the wheel."""
    started = time.monotonic()
    run([sys.executable, "-m", "build", "--outdir", str(dist), str(REPO)], cwd=REPO, timeout=600)
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        raise CheckFailed(f"expected one wheel and one sdist in {dist}, found {wheels + sdists}")
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)], cwd=REPO)
    step(
        f"built {wheels[0].name} and {sdists[0].name}, twine check passed ({time.monotonic() - started:.0f}s)"
    )
    return wheels[0]


def install(wheel: Path, venv: Path) -> Path:
    """Create a clean virtualenv and install the wheel (with the emulator extra) and pinned Airflow."""
    started = time.monotonic()
    # Without PYTHONPATH: pip must not find this checkout's package already "installed" there.
    env = clean_env()
    run([base_python(), "-m", "venv", str(venv)], cwd=venv.parent, env=env)
    python = venv / "bin" / "python"
    cmd = [
        str(python),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--no-compile",
        f"apache-airflow=={AIRFLOW_VERSION}",
    ]
    cmd.append(f"{wheel}[emulator]")
    constraints = constraints_file()
    if constraints:
        cmd += ["-c", str(constraints)]
    run(cmd, cwd=venv.parent, env=env, timeout=900)
    run([str(python), "-m", "pip", "check"], cwd=venv.parent, env=env)
    step(
        f"installed the wheel into a clean virtualenv {venv} "
        f"({'constraints ' + constraints.name if constraints else 'no constraints file'}; "
        f"{time.monotonic() - started:.0f}s)"
    )
    return python


INSPECT = """
import json, importlib.metadata as md
import airflow_provider_apicore as p
from airflow_provider_apicore.example_data import sample_images_dir
from airflow_provider_apicore.schemas import __file__ as schemas_init
from pathlib import Path
dist = md.distribution("airflow-provider-apicore")
print(json.dumps({
    "file": p.__file__,
    "version": p.__version__,
    "dist_version": dist.version,
    "editable": dist.read_text("direct_url.json"),
    "schemas": sorted(x.name for x in Path(schemas_init).parent.glob("*.json")),
    "sample_images": str(sample_images_dir()),
    "images": sorted(x.name for x in sample_images_dir().iterdir()),
}))
"""


def clean_env(drop_prefix: str | None = None) -> dict[str, str]:
    """
    This environment without ``PYTHONPATH``/``PYTHONHOME`` (nothing from the checkout) and without
    ``PYTHONDONTWRITEBYTECODE``: the wheel is installed with ``--no-compile``, so the first process of
    the check compiles what it imports and the next ones (``db migrate``, ``providers list``, ``dags
    test``) read that bytecode instead of compiling Airflow again (about 6 s of CPU each on 2 cores).
    """
    dropped = ("PYTHONPATH", "PYTHONHOME", "PYTHONDONTWRITEBYTECODE")
    return {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not (drop_prefix and k.startswith(drop_prefix))
    }


def inspect(python: Path, venv: Path, work: Path) -> dict:
    """Check the installed package comes from the virtualenv, not from this checkout."""
    env = clean_env()
    info = json.loads(run([str(python), "-c", INSPECT], cwd=work, env=env).strip().splitlines()[-1])
    if not info["file"].startswith(str(venv)) or str(REPO) in info["file"]:
        raise CheckFailed(f"the provider was imported from {info['file']}, not from the clean virtualenv")
    if info["editable"] and '"editable": true' in info["editable"]:
        raise CheckFailed(f"the provider is installed editable: {info['editable']}")
    if info["version"] != info["dist_version"]:
        raise CheckFailed(f"__version__ {info['version']} != distribution version {info['dist_version']}")
    if "describe_payload.json" not in info["schemas"]:
        raise CheckFailed(f"describe_payload.json missing from the installed schemas: {info['schemas']}")
    if not any(name.endswith((".png", ".jpg", ".JPG", ".webp")) for name in info["images"]):
        raise CheckFailed(f"no sample images installed in {info['sample_images']}: {info['images']}")
    step(
        f"provider {info['version']} imported from {info['file']}; "
        f"{len(info['schemas'])} schemas, {len(info['images'])} sample files installed"
    )
    return info


def start_emulator(bin_dir: Path, token: str, work: Path) -> tuple[subprocess.Popen, str]:
    port_file = work / "emulator.port"
    proc = subprocess.Popen(
        [
            str(bin_dir / "apicore-emulator"),
            *("--host", "127.0.0.1", "--port", "0", "--port-file", str(port_file), "--tokens", token),
            *("--job-seconds", "2", "--concurrency", "5"),
        ],
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://127.0.0.1:{port_file.read_text().strip()}"
        if proc.poll() is not None:
            raise CheckFailed("the installed apicore-emulator exited before it was ready")
        time.sleep(0.1)
    proc.terminate()
    raise CheckFailed("the installed apicore-emulator did not start within 30 s")


def run_demo(python: Path, work: Path, sample_images: str) -> dict:
    """Run the demo DAG with the clean virtualenv's Airflow against its emulator."""
    started = time.monotonic()
    bin_dir = python.parent
    home, dags, output = work / "airflow-home", work / "dags", work / "output"
    for directory in (home, dags):
        directory.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DEMO_DAG, dags / DEMO_DAG.name)
    env = clean_env("AIRFLOW")
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(dags),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
    )
    airflow = str(bin_dir / "airflow")
    run([airflow, "db", "migrate"], cwd=work, env=env)
    providers = run([airflow, "providers", "list", "--output", "json"], cwd=work, env=env)
    if "airflow-provider-apicore" not in providers:
        raise CheckFailed("`airflow providers list` does not list airflow-provider-apicore")
    token = "wheel-" + secrets.token_hex(8)
    emulator, url = start_emulator(bin_dir, token, work)
    try:
        env["AIRFLOW_CONN_APICORE_DEFAULT"] = json.dumps(
            {"conn_type": "apicore", "host": url, "password": token}
        )
        conf = {"image_dir": sample_images, "output_dir": str(output)}
        run(
            [airflow, "dags", "test", "apicore_describe_images", "--conf", json.dumps(conf)],
            cwd=work,
            env=env,
        )
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    manifest = output / "manifest.jsonl"
    if not manifest.exists():
        raise CheckFailed(f"the demo DAG wrote no manifest at {manifest}")
    records = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    bad = [r["image"] for r in records if r["status"] != "SUCCESS" or len(r.get("prompts") or []) != 4]
    if not records or bad:
        raise CheckFailed(
            f"the demo DAG did not describe every image: {len(records)} records, not done: {bad}"
        )
    step(
        f"demo DAG apicore_describe_images ran from the wheel: {len(records)} images SUCCESS with four "
        f"prompts ({time.monotonic() - started:.0f}s)"
    )
    return {"images": len(records), "manifest": str(manifest)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--workdir", type=Path, help="use this directory instead of a temporary one")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="apicore-wheel-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        wheel = build(work / "dist")
        venv = work / "venv"
        python = install(wheel, venv)
        info = inspect(python, venv, work)
        run_demo(python, work, info["sample_images"])
    except (CheckFailed, subprocess.TimeoutExpired) as err:
        step(f"FAILED: {err}")
        step(f"work directory kept for inspection: {work}")
        return 1
    step(f"OK in {time.monotonic() - started:.0f}s")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
