"""The documentation: generated pages match the code, the site builds strictly, the README stays short.

The generated pages (scripts/generate_docs.py) are checked twice: against a fresh generation, and
against the code read independently here, so a generator that skips a field fails too.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from inference_server import errors as serving_errors
from inference_server import settings as serving_settings
from sagemaker_constructs.settings import AppConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README_LIMIT_BYTES = 12_000


def run_generator(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "container")}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "generate_docs.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generated_pages_are_up_to_date():
    result = run_generator("--check")
    assert result.returncode == 0, f"run `make docs` and commit the pages:\n{result.stderr}"


def _sections(annotation: Any) -> list[tuple[type[BaseModel], bool]]:
    """(model, is a list) for every pydantic model a field holds."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [(annotation, False)]
    if get_origin(annotation) is list:
        return [(model, True) for model, _ in _sections(get_args(annotation)[0])]
    found = []
    for argument in get_args(annotation):
        found += _sections(argument)
    return found


def settings_fields(model: type[BaseModel], prefix: str = "") -> set[str]:
    names = set()
    for name, info in model.model_fields.items():
        path = prefix + (info.alias or name)
        names.add(path)
        for section, is_list in _sections(info.annotation):
            names |= settings_fields(section, f"{path}[]." if is_list else f"{path}.")
    return names


def test_configuration_reference_lists_every_settings_field():
    page = (DOCS / "reference" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.MULTILINE))
    expected = settings_fields(AppConfig)
    assert {"realtime.scaling.min_capacity", "async", "realtime.variants[].weight"} <= expected
    assert sorted(expected - documented) == [], "fields missing from the reference"
    assert sorted(documented - expected) == [], "the reference lists fields the settings lack"


class RecordingEnviron(Mapping[str, str]):
    def __init__(self) -> None:
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return default

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return False

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0


def test_environment_page_lists_every_variable_the_server_reads():
    environ = RecordingEnviron()
    serving_settings.Settings.from_env(environ)
    page = (DOCS / "reference" / "environment.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", page, flags=re.MULTILINE))
    assert {"INFERENCE_MODE", "HEAP_POLICY", "MODEL_DIR"} <= environ.read
    assert sorted(environ.read - documented) == []
    assert sorted(documented - environ.read) == []


def test_http_api_lists_every_error_code():
    page = (DOCS / "http-api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| (\d{3}) \| `([a-z_]+)` \|", page, flags=re.MULTILINE))
    registered = {(kind.status, kind.code) for kind in serving_errors.ERROR_REGISTRY.values()}
    registered.add((serving_errors.INTERNAL_ERROR.status, serving_errors.INTERNAL_ERROR.code))
    assert sorted(registered - {(int(s), c) for s, c in documented}) == []


def _nav_pages(nav: Any) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def test_every_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with mkdocs (requirements-docs.txt)")
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    # The config's one python tag (the mermaid fence formatter) is irrelevant to the nav.
    config = yaml.safe_load(re.sub(r"!!python/name:\S+", "null", text))
    pages = {str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md")}
    assert sorted(pages - set(_nav_pages(config["nav"]))) == []


def test_mkdocs_build_is_strict_and_clean(tmp_path):
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed: `make install` installs requirements-docs.txt")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "configuration.html").is_file()


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT_BYTES, f"README.md is {size} bytes; move detail into docs/"


def test_readme_links_resolve_and_every_docs_page_it_names_is_a_link():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t) and not t.startswith("#")]
    assert local, "the README links into the docs"
    assert [t for t in local if not (ROOT / t).exists()] == []
    linked = {t for t in local if t.startswith("docs/")}
    # A page named in the text (`docs/x.md`) must be a link somewhere in the README.
    named = set(re.findall(r"docs/[\w./-]+\.md", re.sub(r"\]\([^)]*\)", "]", readme)))
    assert sorted(named - linked) == []
