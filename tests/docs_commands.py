"""Every command README.md and docs/*.md show, checked against the code (used by test_docs_commands.py).

The commands are the lines of the fenced ```bash blocks (```text marks output and other non-commands;
comments, `\\` continuations, `&&` chains and leading `VAR=value` assignments are understood). Each command
must match one rule below, else it is an error ("no rule"), so nothing shown goes unchecked:

* `python -m boostmis_jax.main|study ...` (and the console scripts in pyproject.toml): the entry's own absl
  flags, taken from the entry itself, parse the command in a fresh FlagValues; the config file loads; every
  `--config.KEY=VALUE` exists in the locked config with a value of its type; the config passes
  `config_file.check_against_defaults` and `defaults.validate` (without its `study` section for a study).
* other `python -m boostmis_jax.X` and `python benchmarks/X.py`: the entry runs until its argparse parser
  returns, then stops (argparse's own errors: unknown or missing flags, bad choices or types; abbreviations
  are refused, so an old name that prefixes a new one is caught). An entry without argparse is an error,
  never run.
* `python -c CODE`: compiles; `bash SCRIPT`: exists and passes `bash -n`; `python -m pytest PATHS`: the
  paths exist; `pip install [-e] .[extras]` / `'boostmis_jax[extras]'`: the extras exist in pyproject.toml;
  `python3 -m venv DIR` and `. DIR/bin/activate`: accepted.

The entry points are parsed in worker subprocesses (`python tests/docs_commands.py --worker ...`): absl's
global flags and each entry's module state stay out of the test process, one worker per absl entry and
one for every argparse entry. Nothing is trained or benchmarked here: the argparse entries are stopped
when their parser returns, the absl entries never reach `absl.app.run`'s main.
"""
from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import io
import json
import re
import runpy
import shlex
import subprocess
import sys
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHONS = ("python", "python3")
SEPARATORS = ("&&", "||", ";", "|")
# absl entries: does the config they take carry a `study` section?
ABSL_ENTRIES = {"boostmis_jax.main": False, "boostmis_jax.study": True}
WORKER_TIMEOUT_S = 300


def doc_files() -> list[Path]:
    """README.md and every docs/*.md page (not the study outputs under docs/results/)."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# ======================================================================================================
# Markdown -> commands
# ======================================================================================================
@dataclasses.dataclass(frozen=True)
class Block:
    lang: str
    where: str   # "docs/usage.md:42", the line of the block's first content line
    body: str


@dataclasses.dataclass(frozen=True)
class Command:
    where: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return shlex.join([f"{k}={v}" for k, v in self.env] + list(self.argv))


FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def fenced_blocks(text: str, name: str = "<doc>") -> list[Block]:
    """Every fenced code block with its language tag ('' when untagged)."""
    blocks, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, start = m.group(2), m.group(3).lower(), i + 1
        j = start
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        indent = len(m.group(1))
        body = "\n".join(line[indent:] if line[:indent].strip() == "" else line for line in lines[start:j])
        blocks.append(Block(lang, f"{name}:{start + 1}", body))
        i = j + 1
    return blocks


def commands_in(block: Block) -> list[Command]:
    """The commands of a bash block: continuations joined, comments dropped, chains split."""
    out = []
    file, first = block.where.rsplit(":", 1)
    logical, start = "", None
    for n, line in enumerate(block.body.split("\n")):
        if start is None:
            start = int(first) + n
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        tokens = shlex.split(logical, comments=True)
        where = f"{file}:{start}"
        logical, start = "", None
        part: list[str] = []
        for tok in [*tokens, "&&"]:
            if tok in SEPARATORS:
                if part:
                    env = []
                    while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):
                        k, v = part.pop(0).split("=", 1)
                        env.append((k, v))
                    if part:
                        out.append(Command(where, tuple(part), tuple(env)))
                part = []
            else:
                part.append(tok)
    return out


def doc_commands(paths: list[Path] | None = None) -> list[Command]:
    out = []
    for path in paths or doc_files():
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        for block in fenced_blocks(path.read_text(), name):
            if block.lang == "bash":
                out.extend(commands_in(block))
    return out


def inline_commands(paths: list[Path] | None = None) -> list[Command]:
    """Commands in prose and tables: `code spans` that start with python, pip or bash (after VAR=value),
    outside fenced blocks and HTML comments; spans with "..." are sketches and a bare entry name
    (`python -m boostmis_jax.predict`, `boostmis-jax`) names the tool, neither is a command."""
    out = []
    for path in paths or doc_files():
        name = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
        out += inline_commands_from_markdown(path.read_text(), name)
    return out


def inline_commands_from_markdown(text: str, name: str = "<doc>") -> list[Command]:
    blank = lambda m: re.sub(r"[^\n]", " ", m.group(0))  # noqa: E731  keep line numbers
    text = re.sub(r"<!--.*?-->", blank, text, flags=re.DOTALL)
    text = re.sub(r"^(\s*)(`{3,}|~{3,}).*?^\s*\2\s*$", blank, text, flags=re.DOTALL | re.MULTILINE)
    heads = {*PYTHONS, "pip", "bash", *_scripts()}
    out = []
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(m.group(1).split())
        if "..." in span:
            continue
        try:
            tokens = shlex.split(span)
        except ValueError:
            continue
        env = []
        while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
            k, v = tokens.pop(0).split("=", 1)
            env.append((k, v))
        bare_name = len(tokens) == 1 or (len(tokens) == 3 and tokens[1] == "-m")  # `python -m X`: a name
        if tokens and tokens[0] in heads and not bare_name:
            out.append(Command(f"{name}:{text[:m.start()].count(chr(10)) + 1}", tuple(tokens), tuple(env)))
    return out


def commands_from_markdown(text: str, name: str = "<doc>") -> list[Command]:
    return [c for b in fenced_blocks(text, name) if b.lang == "bash" for c in commands_in(b)]


# ======================================================================================================
# Commands -> checks
# ======================================================================================================
def _pyproject() -> dict:
    text = (ROOT / "pyproject.toml").read_text()
    try:
        import tomllib
    except ImportError:  # Python 3.10: the two tables this checker reads, by their `key =` lines
        tables: dict[str, dict] = {}
        section = None
        for line in text.splitlines():
            head = re.match(r"^\[([\w.-]+)\]\s*$", line)
            if head:
                section = head.group(1)
            elif section in ("project.scripts", "project.optional-dependencies"):
                kv = re.match(r'^([\w-]+)\s*=\s*"?([^"]*)"?', line)
                if kv:
                    tables.setdefault(section, {})[kv.group(1)] = kv.group(2)
        return {"project": {"scripts": tables.get("project.scripts", {}),
                            "optional-dependencies": tables.get("project.optional-dependencies", {})}}
    return tomllib.loads(text)


def _scripts() -> dict[str, str]:
    """Console scripts: name -> module (`boostmis-jax` -> `boostmis_jax.main`)."""
    return {k: v.split(":")[0] for k, v in _pyproject().get("project", {}).get("scripts", {}).items()}


def classify(cmd: Command) -> tuple[str, str, list[str]]:
    """(kind, target, args); kind 'error' carries the message in target."""
    argv = list(cmd.argv)
    head, rest = argv[0], argv[1:]
    if head in _scripts():
        return _entry(_scripts()[head], rest)
    if head in (".", "source"):
        ok = len(rest) == 1 and rest[0].endswith("bin/activate")
        return ("ok", "", []) if ok else ("error", "only `. DIR/bin/activate` is known", [])
    if head == "pip" or (head in PYTHONS and rest[:2] == ["-m", "pip"]):
        return "pip", "", rest if head == "pip" else rest[2:]
    if head == "bash":
        return "bash", rest[0] if rest else "", rest[1:]
    if head in PYTHONS:
        if rest[:2] == ["-m", "venv"]:
            return "ok", "", []
        if rest[:2] == ["-m", "pytest"]:
            return "pytest", "", rest[2:]
        if rest[:1] == ["-c"] and len(rest) >= 2:
            return "python-c", rest[1], []
        if rest[:1] == ["-m"] and len(rest) >= 2:
            return _entry(rest[1], rest[2:])
        if rest and rest[0].endswith(".py"):
            return "argparse", rest[0], rest[1:]
    return "error", "no rule for this command; add one to tests/docs_commands.py", []


def _entry(module: str, args: list[str]) -> tuple[str, str, list[str]]:
    if module in ABSL_ENTRIES:
        return "absl", module, args
    if module.startswith("boostmis_jax"):
        return "argparse", module, args
    return "error", f"unknown module {module}", []


def _check_pip(args: list[str]) -> str | None:
    extras = set(_pyproject().get("project", {}).get("optional-dependencies", {}))
    specs = [a for a in args if a not in ("install", "-e", "--editable", "-U", "--upgrade")]
    if not args or args[0] != "install" or not specs:
        return "only `pip install [-e] SPEC` is known"
    for spec in specs:
        m = re.fullmatch(r"(\.|boostmis_jax|boostmis-jax)(?:\[([\w,\s-]+)\])?", spec)
        if not m:
            return f"pip target {spec!r} is not this project"
        missing = [e.strip() for e in (m.group(2) or "").split(",") if e.strip() and e.strip() not in extras]
        if missing:
            return f"extra(s) {missing} not in pyproject.toml's optional-dependencies {sorted(extras)}"
    return None


def _check_local(kind: str, target: str, args: list[str]) -> str | None:
    if kind == "ok":
        return None
    if kind == "error":
        return target
    if kind == "pip":
        return _check_pip(args)
    if kind == "pytest":
        missing = [a.split("::")[0] for a in args if not a.startswith("-") and "/" in a
                   and not (ROOT / a.split("::")[0]).exists()]
        return f"test path(s) {missing} do not exist" if missing else None
    if kind == "python-c":
        try:
            compile(target, "<python -c>", "exec")
        except SyntaxError as e:
            return f"python -c code does not compile: {e}"
        return None
    if kind == "bash":
        script = ROOT / target
        if not script.is_file():
            return f"script {target} does not exist"
        r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        return f"bash -n {target}: {r.stderr.strip()}" if r.returncode else None
    if kind == "argparse":
        source = _entry_source(target)
        if source is None:
            return f"{target} does not exist"
        if "argparse" not in source.read_text():
            # run to its parser and stopped there; an entry without one would really run
            return f"{target} has no argparse parser to check the command against; add a rule"
    return None


def _entry_source(target: str) -> Path | None:
    """The file `python TARGET` or `python -m TARGET` executes."""
    if target.endswith(".py"):
        return ROOT / target if (ROOT / target).is_file() else None
    path = ROOT.joinpath(*target.split("."))
    for candidate in (path / "__main__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def check_commands(cmds: list[Command], python: str = sys.executable) -> list[str]:
    """One line 'where: `command`: problem' per command that does not match the code; [] when all do."""
    errors: list[str] = []
    remote: dict[tuple[str, str], list[tuple[Command, list]]] = {}
    for cmd in cmds:
        kind, target, args = classify(cmd)
        err = _check_local(kind, target, args)
        if err:
            errors.append(f"{cmd.where}: `{cmd}`: {err}")
        elif kind == "absl":
            remote.setdefault(("absl", target), []).append((cmd, [target, *args]))
        elif kind == "argparse":
            remote.setdefault(("argparse", ""), []).append((cmd, [target, *args]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(remote))) as pool:  # processes overlap
        futures = {key: pool.submit(_run_worker, python, *key, [argv for _, argv in items])
                   for key, items in remote.items()}
        for key, items in remote.items():
            results = futures[key].result()
            errors += [f"{cmd.where}: `{cmd}`: {res}"
                       for (cmd, _), res in zip(items, results, strict=True) if res]
    return errors


def _run_worker(python: str, kind: str, target: str, argvs: list[list[str]]) -> list[str | None]:
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = Path(tmp) / "in.json", Path(tmp) / "out.json"
        inp.write_text(json.dumps(argvs))
        r = subprocess.run([python, __file__, "--worker", kind, target or "-", str(inp), str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                           env=_worker_env())
        if r.returncode or not out.exists():
            tail = (r.stderr or r.stdout).strip().splitlines()[-5:]
            return [f"the {kind} worker failed (rc {r.returncode}): {' | '.join(tail)}"] * len(argvs)
        return json.loads(out.read_text())


def _worker_env() -> dict:
    import os
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("JAX_PLATFORMS", "cpu")
    return env


# ======================================================================================================
# Workers (run in their own process)
# ======================================================================================================
class _Stop(Exception):
    """Raised where the entry would start working: its arguments are parsed."""


def _last_line(text: str, fallback: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:400] if lines else fallback


def _absl_worker(module: str, argvs: list[list[str]]) -> list[str | None]:
    """The entry's flags as it defines them (run up to absl.app.run), then each command parsed in a fresh
    FlagValues with the entry's post-parse config checks."""
    from absl import app, flags
    from ml_collections import config_flags

    def stop(*_a, **_k):
        raise _Stop()

    app.run = stop
    before = {id(flags.FLAGS[n]) for n in flags.FLAGS}
    sys.argv = [module]
    try:
        with redirect_stdout(io.StringIO()):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
        return [f"{module} ended before absl.app.run"] * len(argvs)
    except _Stop:
        pass
    template = list({id(f): f for f in (flags.FLAGS[n] for n in flags.FLAGS) if id(f) not in before}.values())
    return [_absl_one(module, template, argv, flags, config_flags) for argv in argvs]


def _absl_one(module: str, template: list, argv: list[str], flags, config_flags) -> str | None:
    from boostmis_jax import defaults
    from boostmis_jax.config_file import check_against_defaults, one_line

    from ml_collections.config_flags.config_flags import ConfigFileFlagParser

    def is_config(f) -> bool:
        return isinstance(getattr(f, "parser", None), ConfigFileFlagParser)

    fv = flags.FlagValues()
    for f in template:
        if is_config(f):
            config_flags.DEFINE_config_file(f.name, None, f.help, flag_values=fv, sys_argv=argv,
                                            lock_config=getattr(f.parser, "_lock_config", True))
        else:
            fv[f.name] = copy.deepcopy(f)
    try:
        rest = fv(argv)
        if len(rest) > 1:
            return f"unexpected positional arguments {rest[1:]}"
        for f in template:
            if f.default is None and fv[f.name].value is None:
                return f"--{f.name} is required"
        for f in template:
            if not is_config(f):
                continue
            cfg = fv[f.name].value
            cfg.get("seed")  # config_flags reports a missing file lazily, on first access
            path = config_flags.get_config_filename(fv[f.name])
            has_study = "study" in cfg
            if has_study != ABSL_ENTRIES[module]:
                return (f"{path} {'has' if has_study else 'lacks'} a study section, "
                        f"{module} takes {'one' if ABSL_ENTRIES[module] else 'none'}")
            if has_study:
                cfg = copy.deepcopy(cfg)
                cfg.unlock()
                del cfg["study"]
            check_against_defaults(cfg, path)
            defaults.validate(cfg)
    except SystemExit as e:
        return f"exit {e.code}"
    except Exception as e:  # noqa: BLE001  any failure to parse is the finding
        return f"{type(e).__name__}: {one_line(e)}"
    return None


def _argparse_worker(argvs: list[list[str]]) -> list[str | None]:
    """Each entry run until its argparse parser returns; errors are argparse's (or the entry's) last line."""
    import argparse

    orig_args, orig_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    depth = [0]

    def parse_args(self, args=None, namespace=None):
        self.allow_abbrev = False  # `--batch` must not pass for a flag renamed to `--batch-size`
        depth[0] += 1
        try:
            orig_args(self, args, namespace)
        finally:
            depth[0] -= 1
        raise _Stop()

    def parse_known_args(self, args=None, namespace=None):
        if depth[0]:
            return orig_known(self, args, namespace)
        self.allow_abbrev = False
        orig_known(self, args, namespace)
        raise _Stop()

    argparse.ArgumentParser.parse_args = parse_args
    argparse.ArgumentParser.parse_known_args = parse_known_args
    results: list[str | None] = []
    for target, *args in argvs:
        sys.argv = [target, *args]
        err = io.StringIO()
        try:
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                if target.endswith(".py"):
                    runpy.run_path(str(ROOT / target), run_name="__main__")
                else:
                    runpy.run_module(target, run_name="__main__", alter_sys=True)
            results.append(f"{target} ended without parsing its arguments")
        except _Stop:
            results.append(None)
        except SystemExit as e:
            results.append(_last_line(err.getvalue(), f"exit {e.code}"))
        except Exception as e:  # noqa: BLE001
            results.append(f"{type(e).__name__}: {_last_line(str(e), '')}")
    return results


def _worker_main(kind: str, target: str, inp: str, out: str) -> None:
    argvs = json.loads(Path(inp).read_text())
    res = _absl_worker(target, argvs) if kind == "absl" else _argparse_worker(argvs)
    Path(out).write_text(json.dumps(res))


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.path.insert(0, str(ROOT))
    _worker_main(*sys.argv[2:6])
