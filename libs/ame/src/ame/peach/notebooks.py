"""A PEACH notebook task as a plain Python script: the cell that defines the entry function (or every code cell,
with `full_notebook`), then a call of that function.

Cells are read with nbformat. IPython syntax is translated with IPython's own transformer
(`IPython.core.inputtransformer2.TransformerManager`), exactly as a notebook kernel would; what it produces must
then run without IPython: shell escapes (`!cmd`, `x = !cmd`) run through a small stand-in for `get_ipython()`,
`%matplotlib` is ignored (the process has no display), and any other magic is refused with the cell named, since
only a kernel could run it (`%pip` in particular: dependencies belong in the task's `dependencies`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

_ALLOWED_SHELL = {"system", "getoutput"}
_IGNORED_LINE_MAGICS = {"matplotlib"}

# get_ipython() for a process without IPython: only what the translated cells allowed above can call.
_PRELUDE = """\
import subprocess as _ame_subprocess
import sys as _ame_sys


class _AmeShell:
    def system(self, command):
        _ame_sys.stdout.flush()
        _ame_sys.stderr.flush()
        return _ame_subprocess.run(command, shell=True).returncode

    def getoutput(self, command, split=True, depth=0):
        out = _ame_subprocess.run(command, shell=True, capture_output=True, text=True).stdout
        return out.splitlines() if split else out

    def run_line_magic(self, name, line, _stack_depth=0):
        return None


def get_ipython():
    return _AmeShell()


"""


class NotebookError(ValueError):
    """The notebook cannot become a task: unreadable, no cell defines the entry function, or a refused magic."""


@dataclass(frozen=True)
class Cell:
    index: int  # 1-based among all cells, as a notebook shows them
    source: str


def code_cells(text: str, notebook: str) -> list[Cell]:
    import nbformat

    try:
        node = nbformat.reads(text, as_version=4)  # type: ignore[no-untyped-call]
    except Exception as exc:  # nbformat raises several unrelated types for a broken file
        raise NotebookError(f"{notebook}: not a readable notebook ({str(exc)[:300]})") from None
    return [Cell(i, str(c.source)) for i, c in enumerate(node.cells, start=1) if c.cell_type == "code"]


def _translate(cell: Cell, notebook: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    try:
        code = str(TransformerManager().transform_cell(cell.source))  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise NotebookError(f"{notebook}, cell {cell.index}: IPython cannot read it ({exc})") from None
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise NotebookError(f"{notebook}, cell {cell.index}, line {exc.lineno}: {exc.msg}") from None
    for node in ast.walk(tree):
        refused = _refused_magic(node)
        if refused:
            raise NotebookError(
                f"{notebook}, cell {cell.index}: the IPython magic {refused} needs a notebook kernel and cannot "
                "run in a task; remove it (put packages in the task's `dependencies`)"
            )
    return code


def _refused_magic(node: ast.AST) -> str | None:
    """`%name` for a call of get_ipython() other than the shell escapes and ignored magics; None otherwise."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
        return None
    owner = node.func.value
    if not (isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "get_ipython"):
        return None
    method = node.func.attr
    if method in _ALLOWED_SHELL:
        return None
    name = str(node.args[0].value) if node.args and isinstance(node.args[0], ast.Constant) else "?"
    if method == "run_line_magic" and name in _IGNORED_LINE_MAGICS:
        return None
    return f"%%{name}" if method == "run_cell_magic" else f"%{name}"


def _defines(code: str, method: str) -> bool:
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == method
        for node in ast.parse(code).body
    )


def task_script(text: str, notebook: str, method: str, *, full_notebook: bool = False) -> str:
    """The Python script that runs the task; NotebookError names the notebook and cell when it cannot."""
    cells = code_cells(text, notebook)
    translated = [(cell, _translate(cell, notebook) if full_notebook else None) for cell in cells]
    chosen: list[tuple[Cell, str]] = []
    if full_notebook:
        chosen = [(cell, code) for cell, code in translated if code is not None]
        if not any(_defines(code, method) for _, code in chosen):
            raise NotebookError(f"{notebook}: no cell defines the entry function {method}()")
    else:
        for cell in cells:
            if f"def {method}" not in cell.source:
                continue
            code = _translate(cell, notebook)
            if _defines(code, method):
                chosen = [(cell, code)]
                break
        if not chosen:
            raise NotebookError(
                f"{notebook}: no cell defines the entry function {method}() at its top level "
                "(with `full_notebook: true` every cell runs first)"
            )
    parts = [_PRELUDE]
    for cell, code in chosen:
        label = f"{notebook} [cell {cell.index}]"
        parts.append(f"exec(compile({code!r}, {label!r}, 'exec'), globals())\n")
    parts.append(f"{method}()\n")
    return "".join(parts)
