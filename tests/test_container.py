"""The container (docker/): lint the Dockerfile, check it against the repository, run it.

Most tests check what the build relies on: hadolint finds no warning or error; every
COPY source exists and passes the ignore file; the builder stage gets every file
setup.cfg needs and makes the wheel the runtime stage installs; the entry point and the
commands the build runs are console scripts of the installed packages; versions, labels,
the user, the base image and the environment the code reads; the Apptainer definition
and docker/README.md name the same image. A slow test builds the wheel from the filtered
context as the builder stage does. The tests marked ``container`` run docker/README.md's
``buildah run`` commands in the image that docker/build-local.sh built (CI builds it and
sets MVPA_FLOWS_TEST_IMAGE).
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import mvpa_flows

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
APPTAINER_DEF = DOCKER / "mvpa_flows.def"
DOCKER_README = DOCKER / "README.md"

#: environment variables the code reads that the image must set
CONTAINER_ENV = {"MVPA_FLOWS_CONTAINER"}
#: MVPA_FLOWS_* variables the code reads that the image deliberately leaves unset -> why
NOT_SET_IN_IMAGE: dict[str, str] = {}
#: hadolint rules ignored inline in the Dockerfile -> why (each ignore must be listed)
ALLOWED_HADOLINT_IGNORES = {
    "DL3008": "Debian's security archive replaces pinned apt versions; the base tag pins "
    "the release"
}
REQUIRED_LABELS = ("title", "version", "source", "licenses")


# --------------------------------------------------------------------------------------
# A small Dockerfile reader: continuation lines, comments, flags, stages, ARG/ENV values.


@dataclass
class Instruction:
    cmd: str  # upper case
    value: str  # the arguments as written (continuations joined)
    flags: dict[str, str]  # --from=builder, --mount=... (leading flags)
    args: str  # value without the leading flags
    lineno: int


@dataclass
class Stage:
    base: str  # resolved image reference or stage name
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)  # ARG and ENV, resolved
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    args: dict[str, str] = field(default_factory=dict)

    def all(self, cmd):
        return [i for i in self.instructions if i.cmd == cmd]


def _logical_lines(text):
    """(line number, instruction text) with continuations joined and comments dropped."""
    current, start = "", None
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue  # comments (and parser directives); blank lines between instructions
        if start is None:
            start = lineno
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        yield start, current.strip()
        current, start = "", None
    if current.strip():
        yield start, current.strip()


def _substitute(value, variables):
    def repl(match):
        name = match.group(1) or match.group(2)
        return variables.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, value)


def _pairs(args, variables):
    """KEY=VALUE pairs of ENV/LABEL/ARG (quotes removed, variables substituted)."""
    out = {}
    for token in shlex.split(args):
        key, sep, value = token.partition("=")
        out[key] = _substitute(value, variables) if sep else None
    return out


def parse_dockerfile(path=DOCKERFILE):
    """Global ARGs and the stages of a Dockerfile, with their values resolved."""
    global_args, stages = {}, []
    for lineno, line in _logical_lines(Path(path).read_text()):
        cmd, _, value = line.partition(" ")
        cmd, value = cmd.upper(), value.strip()
        tokens = value.split()
        flags = {}
        while tokens and tokens[0].startswith("--"):
            key, _, flag_value = tokens.pop(0)[2:].partition("=")
            flags[key] = flag_value
        args = " ".join(tokens)
        inst = Instruction(cmd, value, flags, args, lineno)
        if cmd == "FROM":
            parts = re.split(r"\s+[aA][sS]\s+", args)
            image = parts[0]
            name = parts[1] if len(parts) > 1 else None
            stages.append(Stage(_substitute(image, global_args), name))
            continue
        if not stages:
            assert cmd == "ARG", f"line {lineno}: only ARG may come before FROM"
            global_args.update({k: (v or "") for k, v in _pairs(args, global_args).items()})
            continue
        stage = stages[-1]
        stage.instructions.append(inst)
        if cmd == "ARG":
            for key, default in _pairs(args, stage.variables).items():
                resolved = default if default is not None else global_args.get(key, "")
                stage.args[key] = stage.variables[key] = resolved
        elif cmd == "ENV":
            for key, env_value in _pairs(args, stage.variables).items():
                stage.env[key] = stage.variables[key] = env_value
        elif cmd == "LABEL":
            stage.labels.update(_pairs(args, stage.variables))
    return global_args, stages


@pytest.fixture(scope="module")
def dockerfile():
    return parse_dockerfile()


@pytest.fixture(scope="module")
def runtime(dockerfile):
    return dockerfile[1][-1]


@pytest.fixture(scope="module")
def builder(dockerfile):
    stages = dockerfile[1]
    assert len(stages) >= 2, "expected a builder stage and a runtime stage"
    return stages[0]


@pytest.fixture(scope="module")
def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def _image_tag(runtime):
    return runtime.env["MVPA_FLOWS_CONTAINER"]


# --------------------------------------------------------------------------------------
# .dockerignore semantics (moby/patternmatcher): last matching pattern wins, a pattern
# matches a path or any of its parents, `**` spans directories, `*` and `?` do not.


def _ignore_rules(path=DOCKERIGNORE):
    rules = []
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negate, re.compile(_pattern_regex(pattern))))
    return rules


def _pattern_regex(pattern):
    out, i = "^", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
            continue
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
            continue
        else:
            out += re.escape(char)
        i += 1
    return out + "$"


def is_ignored(relpath, rules):
    parts = Path(relpath).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.match(c) for c in candidates):
            ignored = not negate
    return ignored


def _context_files(rules):
    """Files of the repository that go into the build context (relative paths)."""
    out = []
    for root, dirs, files in os.walk(REPO):
        rel_root = Path(root).relative_to(REPO)
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in files:
            rel = (rel_root / name).as_posix()
            if not is_ignored(rel, rules):
                out.append(rel)
    return sorted(out)


def _copy_sources(stage):
    """(source, destination) of the stage's COPY instructions that read the context."""
    out = []
    for inst in stage.all("COPY"):
        if "from" in inst.flags:
            continue
        *sources, dest = shlex.split(_substitute(inst.args, stage.variables))
        out.extend((src, dest) for src in sources)
    return out


# --------------------------------------------------------------------------------------
# Lint


def test_hadolint_finds_no_warning_or_error():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is not installed (pip install -e '.[test]' provides it)")
        pytest.skip("hadolint is not installed (pip install -e '.[test]' provides it)")
    proc = subprocess.run(
        [hadolint, "--format", "json", "--no-fail", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    findings = json.loads(proc.stdout or "[]")
    bad = [
        f"line {f['line']} {f['code']} {f['level']}: {f['message']}"
        for f in findings
        if f["level"] in ("error", "warning")
    ]
    assert not bad, "hadolint docker/Dockerfile:\n" + "\n".join(bad)


def test_hadolint_ignores_are_deliberate():
    ignored = re.findall(r"#\s*hadolint\s+ignore=([\w,]+)", DOCKERFILE.read_text())
    codes = {code for group in ignored for code in group.split(",")}
    unexplained = codes - set(ALLOWED_HADOLINT_IGNORES)
    assert not unexplained, (
        f"hadolint rules {sorted(unexplained)} are ignored in docker/Dockerfile; fix the "
        "finding, or add the rule with its reason to ALLOWED_HADOLINT_IGNORES"
    )


# --------------------------------------------------------------------------------------
# Paths


def test_copy_sources_exist_and_pass_the_ignore_file(dockerfile):
    rules = _ignore_rules()
    problems = []
    for stage in dockerfile[1]:
        for src, _dest in _copy_sources(stage):
            path = REPO / src
            if not path.exists():
                problems.append(f"COPY {src}: not in the repository")
                continue
            files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
            for file in files:
                rel = file.relative_to(REPO).as_posix()
                if "__pycache__" in rel or rel.endswith((".pyc", ".pyo")):
                    continue
                if is_ignored(rel, rules):
                    problems.append(f"COPY {src}: {rel} is excluded by {DOCKERIGNORE.name}")
    assert not problems, "\n".join(problems)


def test_build_context_is_only_the_sources():
    files = _context_files(_ignore_rules())
    tops = {f.split("/")[0] for f in files}
    assert tops == {"setup.cfg", "pyproject.toml", "README.md", "mvpa_flows", "bids_specs"}
    assert not [f for f in files if "__pycache__" in f or ".egg-info" in f]


def test_builder_gets_everything_setup_cfg_needs(builder, setup_cfg):
    copied = {os.path.normpath(src) for src, _ in _copy_sources(builder)}
    needed = {"setup.cfg", "pyproject.toml"}
    long_description = setup_cfg["metadata"]["long_description"]
    needed |= {f.strip() for f in long_description.removeprefix("file:").split(",")}
    for line in setup_cfg["options"]["package_dir"].strip().splitlines():
        needed.add(os.path.normpath(line.split("=")[1].strip()))
    version_attr = setup_cfg["metadata"]["version"].removeprefix("attr:").strip()
    needed.add(version_attr.split(".")[0])
    missing = {n for n in needed if not any(n == c or n.startswith(c + "/") for c in copied)}
    assert not missing, f"the builder stage does not COPY {sorted(missing)}"
    for _, dest in _copy_sources(builder):
        assert not os.path.isabs(dest), "builder COPYs go below its WORKDIR"


def _builder_wheel_dir(builder):
    for inst in builder.all("RUN"):
        match = re.search(r"pip wheel .*--(?:wheel-dir|w)[ =](\S+)", inst.args)
        if match:
            assert inst.args.rstrip().endswith(" ."), "the builder builds the WORKDIR (.)"
            assert "--no-deps" in inst.args
            return match.group(1)
    pytest.fail("the builder stage has no `pip wheel ... --wheel-dir DIR .`")


def _wheel_name(version):
    name = re.sub(r"[-_.]+", "_", metadata.metadata("mvpa_flows")["Name"])
    return f"{name}-{version}-py3-none-any.whl"


def test_runtime_installs_the_wheel_the_builder_makes(dockerfile, builder, runtime):
    wheel_dir = _builder_wheel_dir(builder)
    mounts = [
        dict(kv.split("=", 1) for kv in inst.flags["mount"].split(","))
        for inst in runtime.all("RUN")
        if "mount" in inst.flags
    ]
    stage_names = {s.name for s in dockerfile[1][:-1]}
    wheel_mounts = [m for m in mounts if m.get("from") in stage_names]
    assert len(wheel_mounts) == 1, mounts
    mount = wheel_mounts[0]
    assert mount["from"] == builder.name and mount["source"] == wheel_dir
    install = next(i for i in runtime.all("RUN") if "mount" in i.flags)
    resolved = _substitute(install.args, runtime.variables)
    expected = f"{mount['target']}/{_wheel_name(mvpa_flows.__version__)}"
    assert expected in shlex.split(resolved), (
        f"the runtime stage must pip install {expected} (the wheel of this version)"
    )


# --------------------------------------------------------------------------------------
# Commands


def _console_scripts(dist):
    return {
        ep.name: ep
        for ep in metadata.distribution(dist).entry_points
        if ep.group == "console_scripts"
    }


def test_entrypoint_is_a_console_script_of_the_package(runtime, setup_cfg):
    (entry,) = runtime.all("ENTRYPOINT")
    command = json.loads(entry.args)  # exec form: a JSON list
    assert isinstance(command, list) and command, "ENTRYPOINT must use the exec (JSON) form"
    declared = dict(
        (part.strip() for part in line.split("=", 1))
        for line in setup_cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert command[0] in declared, f"{command[0]} is not a console script in setup.cfg"
    (installed,) = metadata.entry_points(group="console_scripts", name=command[0])
    assert installed.value == declared[command[0]]
    assert installed.dist.name.replace("-", "_") == "mvpa_flows"
    assert callable(installed.load())
    assert not runtime.all("CMD"), "BIDS-App arguments come from `docker run ... ARGS`"


def test_commands_run_at_build_time_are_installed(runtime):
    """The smoke test at the end of the install runs console scripts that exist."""
    (install,) = [i for i in runtime.all("RUN") if "pip install" in i.args]
    commands = [c.strip().split()[0] for c in install.args.split("&&")[1:]]
    assert commands, "the install should smoke-test the commands it installs"
    scripts = {
        **_console_scripts("mvpa_flows"),
        **_console_scripts("datalad"),
        **_console_scripts("git-annex"),
    }
    shell = {"git"}  # from apt (the base image lacks it)
    unknown = [c for c in commands if c not in scripts and c not in shell]
    assert not unknown, f"{unknown} are neither console scripts nor apt-installed"
    assert "git-annex" in scripts  # `git annex` finds the git-annex script on PATH


def test_git_annex_pin_satisfies_datalad(runtime):
    from datalad.support.annexrepo import AnnexRepo

    pinned = runtime.args["GIT_ANNEX_VERSION"]
    install = next(i for i in runtime.all("RUN") if "pip install" in i.args)
    assert '"git-annex==${GIT_ANNEX_VERSION}"' in install.args
    assert Version(pinned) >= Version(AnnexRepo.GIT_ANNEX_MIN_VERSION)
    (apt,) = [i for i in runtime.all("RUN") if "apt-get install" in i.args]
    assert " git" in apt.args and "--no-install-recommends" in apt.args


# --------------------------------------------------------------------------------------
# Metadata, user, base image, environment


def test_version_matches_the_package(runtime):
    version = mvpa_flows.__version__
    assert runtime.args["VERSION"] == version
    assert runtime.labels["org.opencontainers.image.version"] == version
    assert _image_tag(runtime) == f"{runtime.args['IMAGE_NAME']}:{version}"


def test_oci_labels(runtime, setup_cfg):
    meta = setup_cfg["metadata"]
    labels = runtime.labels
    missing = [k for k in REQUIRED_LABELS if not labels.get(f"org.opencontainers.image.{k}")]
    assert not missing, f"missing OCI labels {missing}"
    assert labels["org.opencontainers.image.title"] == meta["name"]
    assert labels["org.opencontainers.image.source"] == meta["url"]
    assert labels["org.opencontainers.image.licenses"] == meta["license"]
    assert labels["org.opencontainers.image.description"] == meta["description"]


def test_user_is_not_root(runtime):
    users = runtime.all("USER")
    assert users, "the runtime stage must set USER"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    assert users[-1].lineno < runtime.all("ENTRYPOINT")[0].lineno
    useradd = [
        cmd.split()
        for inst in runtime.all("RUN")
        for cmd in inst.args.split("&&")
        if cmd.split()[:1] == ["useradd"]
    ]
    created = {argv[-1] for argv in useradd} | {
        argv[argv.index("--uid") + 1] for argv in useradd if "--uid" in argv
    }
    assert user in created, f"USER {user} is not created by useradd (only {created})"


@pytest.mark.parametrize("index", [0, -1], ids=["builder", "runtime"])
def test_base_image_is_pinned(dockerfile, index):
    stages = dockerfile[1]
    base = stages[index].base
    assert "$" not in base, f"unresolved base image {base}"
    image, _, digest = base.partition("@")
    name, _, tag = image.rpartition(":") if ":" in image else (image, "", "")
    assert digest.startswith("sha256:") or re.match(r"\d+\.\d+\.\d+", tag), (
        f"{base}: pin the base to a full version tag (e.g. 3.11.14-slim-bookworm) or digest"
    )
    assert tag != "latest"
    assert stages[0].base == stages[-1].base, "both stages should use the same Python"
    if name.endswith("python"):
        python = re.match(r"(\d+\.\d+\.\d+)", tag).group(1)
        requires = metadata.metadata("mvpa_flows")["Requires-Python"]
        assert Version(python) in SpecifierSet(requires)


def _environ_reads(package_dir):
    """Names of environment variables read with os.environ[...]/.get()/os.getenv()."""
    names = set()
    for path in Path(package_dir).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            target = None
            if isinstance(node, ast.Subscript):
                target, key = node.value, node.slice
            elif isinstance(node, ast.Call) and node.args:
                func, key = node.func, node.args[0]
                if isinstance(func, ast.Attribute) and func.attr in ("get", "getenv"):
                    target = func.value if func.attr == "get" else func
            if target is None or not isinstance(key, ast.Constant):
                continue
            if "environ" in ast.unparse(target) or ast.unparse(target) == "os.getenv":
                names.add(key.value)
    return names


def test_environment(runtime):
    env = runtime.env
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["MPLBACKEND"] == "Agg"
    read = _environ_reads(Path(mvpa_flows.__file__).parent)
    assert read >= CONTAINER_ENV, f"the code no longer reads {CONTAINER_ENV - read}"
    ours = {name for name in read if name.startswith("MVPA_FLOWS_")}
    unset = ours - set(env) - set(NOT_SET_IN_IMAGE)
    assert not unset, f"the code reads {sorted(unset)}: set them in docker/Dockerfile"
    assert all(env[name] for name in CONTAINER_ENV)


def test_generated_by_records_the_container(runtime, tmp_path, monkeypatch):
    from mvpa_flows.interfaces.bids import write_dataset_description

    tag = _image_tag(runtime)
    monkeypatch.setenv("MVPA_FLOWS_CONTAINER", tag)
    write_dataset_description(tmp_path, {"raw": str(tmp_path)})
    written = json.loads((tmp_path / "dataset_description.json").read_text())
    assert written["GeneratedBy"][0]["Container"] == {"Type": "docker", "Tag": tag}

    monkeypatch.delenv("MVPA_FLOWS_CONTAINER")
    write_dataset_description(tmp_path, {"raw": str(tmp_path)})
    written = json.loads((tmp_path / "dataset_description.json").read_text())
    assert "Container" not in written["GeneratedBy"][0]


# --------------------------------------------------------------------------------------
# Apptainer definition and the README


def _def_header_and_sections(path=APPTAINER_DEF):
    header, sections, current = {}, {}, None
    for line in Path(path).read_text().splitlines():
        if line.startswith("%"):
            current = line[1:].split()[0]
            sections[current] = []
        elif current is not None:
            sections[current].append(line.strip())
        elif line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.split("#")[0].partition(":")
            header[key.strip().lower()] = value.strip()
    return header, sections


def test_apptainer_definition_uses_the_image(runtime):
    header, sections = _def_header_and_sections()
    assert header["bootstrap"] in ("docker-daemon", "docker")
    assert header["from"] == _image_tag(runtime)
    (entry,) = runtime.all("ENTRYPOINT")
    command = json.loads(entry.args)
    runscript = [line for line in sections["runscript"] if line]
    assert runscript == [f'exec {" ".join(command)} "$@"']
    assert any(line.startswith(command[0]) for line in sections.get("test", []))


def test_readme_commands_match_the_image(runtime):
    text = DOCKER_README.read_text()
    tag = _image_tag(runtime)
    version = mvpa_flows.__version__
    assert f"docker build -f docker/Dockerfile -t {tag}" in text
    assert f"apptainer build mvpa_flows-{version}.sif docker/mvpa_flows.def" in text
    assert "--cleanenv" in text and '-u "$(id -u):$(id -g)"' in text
    image = tag.rpartition(":")[0]
    for ref in re.findall(rf"{re.escape(image)}:[\w.-]*\w", text):
        assert ref == tag, f"docker/README.md names {ref}, the image is {tag}"
    for path in set(re.findall(r"\bdocker/[\w.-]*\w", text)):
        assert (REPO / path).exists(), f"docker/README.md refers to {path}, which is absent"
    for match in re.findall(r"mvpa_flows-(\d[\w.]*?)\.(?:sif|tar)", text):
        assert match == version


# --------------------------------------------------------------------------------------
# Slow: the builder stage, replayed on the filtered build context.


@pytest.mark.slow
def test_builder_stage_makes_the_installed_wheel(builder, tmp_path):
    context = tmp_path / "context"
    for rel in _context_files(_ignore_rules()):
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, context / rel)
    workdir = tmp_path / "src"
    workdir.mkdir()
    for src, dest in _copy_sources(builder):
        source, target = context / src, workdir / dest
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        elif dest.endswith("/"):
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / source.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    # the builder's own command, writing to a temporary folder instead of its wheel dir
    wheel_dir = tmp_path / "dist"
    (run,) = [i for i in builder.all("RUN") if "pip wheel" in i.args]
    command = [
        str(wheel_dir) if a == _builder_wheel_dir(builder) else a for a in shlex.split(run.args)
    ]
    assert command[0] == "pip"
    subprocess.run([sys.executable, "-m", *command], cwd=workdir, check=True, timeout=300)
    wheel = wheel_dir / _wheel_name(mvpa_flows.__version__)
    assert wheel.exists(), sorted(p.name for p in wheel_dir.iterdir())
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        dist_info = f"mvpa_flows-{mvpa_flows.__version__}.dist-info"
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    for name, ep in _console_scripts("mvpa_flows").items():
        assert f"{name} = {ep.value}" in entry_points
    specs = {
        p.relative_to(REPO / "bids_specs").as_posix()
        for p in (REPO / "bids_specs").rglob("*.json")
    }
    assert {f"mvpa_flows/bids_specs/{s}" for s in specs} <= names


# --------------------------------------------------------------------------------------
# The built image: docker/build-local.sh builds it (CI does, before the tests); these
# tests run docker/README.md's `buildah run` commands in it.

IMAGE_ENV, STORAGE_ENV = "MVPA_FLOWS_TEST_IMAGE", "MVPA_FLOWS_TEST_IMAGE_STORAGE"
IMAGE_UID = 1000


def _fenced(text, containing, lang="bash"):
    (block,) = [
        b for b in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S) if containing in b
    ]
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line]


def _buildah_runs():
    """docker/README.md's `buildah run` commands: (mounts {host: container}, command)."""
    runs = []
    for argv in _fenced(DOCKER_README.read_text(), "docker/build-local.sh"):
        argv = argv[1:] if argv[0] == "sudo" else argv
        if argv[:2] != ["buildah", "run"]:
            continue
        sep = argv.index("--")
        options, command = argv[2 : sep - 1], argv[sep + 1 :]
        mounts = dict(
            options[i + 1].split(":")[:2] for i, opt in enumerate(options) if opt == "-v"
        )
        runs.append((mounts, command))
    return runs


def test_readme_container_commands_agree():
    """The top-level README's docker/apptainer runs pass the arguments CI runs in the image."""
    (mounts, command) = next(r for r in _buildah_runs() if "participant" in r[1])
    text = (REPO / "README.md").read_text()
    docker_run = next(a for a in _fenced(text, "docker run") if a[:2] == ["docker", "run"])
    tag = docker_run.index("mvpa-flows/mvpa_flows:" + mvpa_flows.__version__)
    assert docker_run[tag + 1 :] == command[1:]
    apptainer = next(a for a in _fenced(text, "docker run") if a[:2] == ["apptainer", "run"])
    assert (
        apptainer[apptainer.index(f"mvpa_flows-{mvpa_flows.__version__}.sif") + 1 :]
        == (command[1:])
    )
    assert "docker/build-local.sh" in text
    # the Apptainer array script is the top-level README's, with the image for mvpa-flows
    script = re.search(r"```bash\n(#!/bin/bash\n#SBATCH --array.*?)```", text, re.S).group(1)
    in_docker = re.search(
        r"```bash\n(#!/bin/bash\n#SBATCH --array.*?)```", DOCKER_README.read_text(), re.S
    ).group(1)
    image = (
        "apptainer run --cleanenv -B /data:/data -B /shared:/shared "
        f"mvpa_flows-{mvpa_flows.__version__}.sif \\\n    "
    )
    assert in_docker == script.replace("mvpa-flows ", image, 1)


@dataclass
class BuiltImage:
    tag: str
    buildah: list
    container: str

    def run(self, command, mounts=(), timeout=600):
        argv = [*self.buildah, "run", "--isolation", "chroot"]
        for host, inside in mounts:
            argv += ["-v", f"{host}:{inside}"]
        return subprocess.run(
            [*argv, self.container, "--", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def built_image():
    from slurm import unavailable

    tag = os.environ.get(IMAGE_ENV)
    if not tag:
        unavailable(
            "container",
            f"no built image here: build it with `bash docker/build-local.sh` (root) and set "
            f"{IMAGE_ENV} to its tag ({STORAGE_ENV} to its STORAGE_ROOT); .ci/run does",
        )
    if shutil.which("buildah") is None or os.geteuid() != 0:
        unavailable("container", "running the image needs buildah and root")
    buildah = ["buildah"]
    if os.environ.get(STORAGE_ENV):
        storage = os.environ[STORAGE_ENV]
        buildah += ["--root", f"{storage}/root", "--runroot", f"{storage}/run"]
    name = f"mvpa-flows-test-{os.getpid()}"
    subprocess.run(
        [*buildah, "from", "--name", name, f"localhost/{tag}"], check=True, capture_output=True
    )
    try:
        yield BuiltImage(tag, buildah, name)
    finally:
        subprocess.run([*buildah, "rm", name], check=False, capture_output=True)


def _writable_by_image(path):
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, IMAGE_UID, IMAGE_UID)
    return path


def _container_of(output_dir):
    description = json.loads((output_dir / "dataset_description.json").read_text())
    return description["GeneratedBy"][0]["Container"]


@pytest.mark.container
def test_image_version(built_image):
    (_, command) = next(r for r in _buildah_runs() if r[1][1:] == ["--version"])
    result = built_image.run(command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"mvpa-flows {mvpa_flows.__version__}"


@pytest.mark.container
def test_image_demo(built_image, tmp_path):
    (mounts, command) = next(r for r in _buildah_runs() if r[1][0] == "mvpa-flows-demo")
    ((host, inside),) = mounts.items()
    demo = _writable_by_image(tmp_path / "demo")
    result = built_image.run(command, [(demo, inside)])
    assert result.returncode == 0, result.stderr + result.stdout
    out = demo / "mvpa_flows"
    assert _container_of(out) == {"Type": "docker", "Tag": built_image.tag}
    for subject in ("01", "02", "03"):
        maps = {p.name.split("_desc-")[1] for p in out.glob(f"sub-{subject}/func/*statmap.nii.gz")}
        assert maps == {"anova_statmap.nii.gz", "searchlight_statmap.nii.gz"}, subject
        assert (out / f"sub-{subject}.html").is_file()


@pytest.mark.container
@pytest.mark.shared_data
def test_image_participant_haxby(built_image, haxby_dir, tmp_path):
    """docker/README.md's participant run, in the image, agrees with this environment's."""
    import nibabel as nb
    import numpy as np
    from conftest import run_app

    (mounts, command) = next(r for r in _buildah_runs() if "participant" in r[1])
    host_paths = {
        "/data/haxby": haxby_dir,
        "/data/haxby-mvpa": _writable_by_image(tmp_path / "out"),
        "/scratch/work": _writable_by_image(tmp_path / "work"),
    }
    assert set(mounts) == set(host_paths)
    result = built_image.run(command, [(host_paths[h], inside) for h, inside in mounts.items()])
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert _container_of(out) == {"Type": "docker", "Tag": built_image.tag}
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetLinks"]["raw"] == "file:///data/haxby"
    assert (out / "sub-1.html").is_file()

    # the same command in this environment (outside the image)
    options = command[command.index("participant") + 1 : command.index("-w")]
    host_run = run_app(
        haxby_dir, tmp_path / "host", "participant", shlex.join(options), tmp_path / "host-work"
    )
    assert host_run == 0
    maps = sorted((out / "sub-1" / "func").glob("*_statmap.nii.gz"))
    assert {p.name.split("_stat-")[1] for p in maps} == {
        "F_desc-anova_statmap.nii.gz",
        "p_desc-anova_statmap.nii.gz",
    }
    for path in maps:
        image, host = nb.load(path), nb.load(tmp_path / "host" / "sub-1" / "func" / path.name)
        np.testing.assert_array_equal(image.affine, host.affine)
        np.testing.assert_allclose(image.get_fdata(), host.get_fdata(), rtol=1e-6, atol=1e-12)
