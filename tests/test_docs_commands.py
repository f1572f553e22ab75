"""The README and docs/*.md against the code: every shown command parses as its entry point expects (one runs,
shrunk), every `--config.KEY` named in prose exists, every link resolves, and a renamed flag is caught.

The checker is tests/docs_commands.py; its docstring lists the rule for each kind of command.
"""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest
from docs_commands import (ROOT, check_commands, classify, commands_from_markdown, doc_commands, doc_files,
                           fenced_blocks, inline_commands, inline_commands_from_markdown)
from helpers import TINY, env

DOC_LANGS = {"bash", "text", "python", "json", "csv", "toml"}


def _docs() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in doc_files()}


def test_every_documented_command_matches_the_code():
    cmds = doc_commands()
    kinds = {classify(c)[0] for c in cmds}
    assert {"absl", "argparse", "pip"} <= kinds  # the extraction found the docs' commands
    inline = inline_commands()
    assert inline  # and the ones in prose and tables
    errors = check_commands(cmds + inline)
    assert not errors, "documented commands that no longer match the code:\n" + "\n".join(errors)


# One command per way a doc can drift from the code; each must be reported, and none may pass.
DRIFTED = {
    "--config.train.stepz=5": "stepz",                       # a renamed/mistyped config key
    "--config.ssl.threshold=flexmach": "flexmach",           # a value the config no longer accepts
    "--config.train.steps=abc": "abc",                       # a value of the wrong type
    "--workdirr runs/x": "workdirr",                         # a renamed absl flag
    "--config.study.seedz=1": "seedz",                       # a renamed study key
    "--inputs x": "--input",                                 # a renamed argparse flag (predict)
    "--batch 5": "--batch",                                  # an old name that is a prefix of the new one
    "--modell wrn28_2": "--modell",                          # a renamed benchmark flag
    "nonexistent": "nonexistent",                            # an extra pyproject.toml lacks
    "frobnicate": "no rule",                                 # a command the checker has no rule for
}
DRIFTED_BLOCK = """\
Some prose.

```bash
python -m boostmis_jax.main --config configs/demo.py --workdir runs/x --config.train.stepz=5
python -m boostmis_jax.main --config configs/demo.py --workdir runs/x --config.ssl.threshold=flexmach
python -m boostmis_jax.main --config configs/demo.py --workdir runs/x \\
  --config.train.steps=abc
python -m boostmis_jax.main --config configs/demo.py --workdirr runs/x
python -m boostmis_jax.study --config configs/study_digits.py --workdir runs/s --config.study.seedz=1
python -m boostmis_jax.predict --workdir runs/demo --inputs x
python -m boostmis_jax.predict --workdir runs/demo --input x --batch 5
python benchmarks/train_step.py --modell wrn28_2
python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[nonexistent]"
frobnicate --x   # not a command of this project
```

```text
python -m boostmis_jax.main --this-is-output --not-checked
```
"""


def test_a_drifted_command_is_caught():
    cmds = commands_from_markdown(DRIFTED_BLOCK, "drifted.md")
    assert len(cmds) == 12  # the continuation joined, the chain split, the text block skipped
    # the same commands, spelled as the code expects, pass (checked in the same call: one set of workers)
    fixed = DRIFTED_BLOCK.replace("stepz", "steps").replace("flexmach", "flexmatch").replace("=abc", "=5")
    fixed = fixed.replace("workdirr", "workdir").replace("seedz", "seeds").replace("--inputs", "--input")
    fixed = fixed.replace("--batch 5", "--batch-size 5").replace("modell", "model")
    fixed = fixed.replace("nonexistent", "test").replace("frobnicate --x", "python -m pytest tests")
    errors = check_commands(cmds + commands_from_markdown(fixed, "fixed.md"))
    assert not [e for e in errors if e.startswith("fixed.md")], "\n".join(errors)
    for needle in DRIFTED.values():
        assert any(needle in e for e in errors), f"not caught: {needle!r}\n" + "\n".join(errors)
    assert len(errors) == len(DRIFTED), "\n".join(errors)  # venv and activate in the chain are fine


def test_a_drifted_command_in_prose_is_caught():
    text = ("Run `python -m boostmis_jax.predict --workdir runs/demo --inputs x` or\n"
            "`python -m boostmis_jax.main --config configs/demo.py --workdir w\n--config.al.cycels=2`; "
            "see `python -m boostmis_jax.predict` and `... --config.al.oracle=files`.\n"
            "```bash\npython -m boostmis_jax.main --config configs/demo.py --workdir w\n```\n")
    cmds = inline_commands_from_markdown(text, "prose.md")
    assert [c.where for c in cmds] == ["prose.md:1", "prose.md:2"]  # names, sketches and blocks skipped
    errors = check_commands(cmds)
    assert len(errors) == 2 and "--input" in errors[0] and "cycels" in errors[1], errors


def test_code_blocks_are_tagged():
    """An untagged or `sh` block would escape the check: commands are ```bash, output is ```text."""
    bad = [f"{b.where}: ```{b.lang}" for name, text in _docs().items() for b in fenced_blocks(text, name)
           if b.lang not in DOC_LANGS]
    assert not bad, f"tag each block as one of {sorted(DOC_LANGS)}:\n" + "\n".join(bad)
    indented = [f"{name}:{i + 1}" for name, text in _docs().items() for i, line in enumerate(text.split("\n"))
                if re.match(r"^ {4}(python3? |pip |bash )", line) and not _inside_fence(text, i)]
    assert not indented, "commands in indented blocks escape the check; use ```bash:\n" + "\n".join(indented)


def _inside_fence(text: str, index: int) -> bool:
    return sum(1 for line in text.split("\n")[:index] if re.match(r"^\s*(```|~~~)", line)) % 2 == 1


def _config_keys() -> set[str]:
    """Every key of the defaults and of the study configs' `study` sections."""
    from boostmis_jax.defaults import get_config

    def flat(cfg, prefix=""):
        for k, v in cfg.items():
            yield prefix + k
            if hasattr(v, "items"):
                yield from flat(v, prefix + k + ".")

    keys = set(flat(get_config()))
    for path in sorted((ROOT / "configs").glob("study_*.py")):
        spec = importlib.util.spec_from_file_location(f"_docs_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        keys |= set(flat(mod.get_config()))
    return keys


def test_config_keys_named_in_prose_exist():
    """`--config.KEY` in prose and tables (outside bash blocks, which the command check covers)."""
    keys = _config_keys()
    missing = []
    for name, text in _docs().items():
        for i, line in enumerate(text.split("\n")):
            for key in re.findall(r"--config\.([a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)*)", line):
                if key not in keys:
                    missing.append(f"{name}:{i + 1}: --config.{key}")
    assert not missing, "keys the config does not have:\n" + "\n".join(missing)


def test_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme, f"README does not link docs/{page.name}"
    broken = []
    for path in doc_files():
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = path.parent / file if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in text.split("\n"):
        m = re.match(r"^#{1,6}\s+(.*?)\s*$", line)
        if m and not _inside_fence(text, text.split("\n").index(line)):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-"))
    return out


def test_pages_state_facts_not_history():
    """The docs say what the code does and what was measured; rounds, issues and commits live in git."""
    history = re.compile(r"\bissue \d+|\bcommit [0-9a-f]{7,}|\b(?:this|previous|last|earlier) "
                         r"(?:session|round)\b|\bfrom commit\b|\bhelper\b|\bthe lead\b|docs/drafts",
                         re.IGNORECASE)
    hits = []
    for name, text in _docs().items():
        prose = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)  # the lead's placeholders are comments
        hits += [f"{name}: {m.group(0)!r}" for m in history.finditer(prose)]
    assert not hits, "history in the docs:\n" + "\n".join(hits)


def test_quick_start_runs(tmp_path):
    """The README's first command, run as written from a checkout-like folder, shrunk to a few steps."""
    readme = doc_commands([ROOT / "README.md"])
    cmd = next(c for c in readme if classify(c)[:2] == ("absl", "boostmis_jax.main"))
    argv = list(cmd.argv)
    assert argv[:3] == ["python", "-m", "boostmis_jax.main"]
    workdir = argv[argv.index("--workdir") + 1]
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    e = env()
    e["PYTHONPATH"] = str(ROOT) + (":" + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    shrunk = [*TINY, "--config.train.steps=10", "--config.al.cycles=0", "--config.checkpoint.every_steps=10"]
    r = subprocess.run([sys.executable, *argv[1:], *shrunk], cwd=tmp_path, env=e, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / workdir / "summary.json").is_file()
    assert (tmp_path / workdir / "model" / "model.json").is_file()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
