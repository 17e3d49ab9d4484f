"""``litestar db shell``: an async REPL on the app's bind-routed sessions."""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

import typer

from alchemy_cli import render, repl
from alchemy_cli.destructive import Confirmation
from alchemy_cli.execution import execute, exit_status, user_traceback
from alchemy_cli.loader import engines_started, load_target, reported_errors, require_binds
from alchemy_cli.locations import locate
from alchemy_cli.namespace import AppNames, add_app_names
from alchemy_cli.workspace import Mode, Workspace, open_workspace

if TYPE_CHECKING:
    from alchemy_cli.loader import Target

SCRIPT = "<db shell>"


def run(
    obj: object,
    *,
    sandbox: bool,
    read_only: bool,
    echo: bool,
    bind: str | None,
    command: str | None,
    plain: bool,
    yes: bool = False,
    timeout: float = 10.0,
    replica: bool = False,
) -> None:
    if sandbox and (read_only or replica):
        other = "--read-only" if read_only else "--replica"
        raise typer.BadParameter(f"--sandbox and {other} cannot be combined; pick one", param_hint="'--sandbox'")
    target = load_target(obj)
    require_binds(target, [bind] if bind else [])
    mode: Mode = "sandbox" if sandbox else "read-only" if read_only or replica else "normal"
    # Without a terminal on stdin, the input is a script (as with `python < script.py`).
    source = command if command is not None else (None if sys.stdin.isatty() else sys.stdin.read())
    with reported_errors():
        code = asyncio.run(
            _shell(
                target,
                mode=mode,
                bind=bind,
                echo=echo,
                source=source,
                plain=plain,
                confirmation=Confirmation(yes or sandbox),  # the sandbox rolls everything back, as --dry-run
                timeout=timeout,
                replica=replica,
            )
        )
    raise typer.Exit(code)


async def _shell(
    target: Target,
    *,
    mode: Mode,
    bind: str | None,
    echo: bool,
    source: str | None,
    plain: bool,
    confirmation: Confirmation,
    timeout: float,
    replica: bool = False,
) -> int:
    async with engines_started(target.plugin, connect_timeout=timeout):
        lost: list[str] = []
        # The farewell is printed only once the workspace (and the sandbox, in sandbox mode) closed: a
        # sandbox that could not roll back raises from there instead, and the command fails.
        async with open_workspace(target, mode=mode, bind=bind, echo=echo, replica=replica) as workspace:
            workspace.confirmation = confirmation
            namespace, renamed = workspace.namespace()
            try:
                app_names = await add_app_names(target, namespace)
                if source is not None:
                    code = await _script(source, namespace, target)
                else:
                    _greet(workspace, renamed, app_names)
                    prompt = _prompt(target, "replica" if replica else mode)
                    errors = repl.Errors(target.redact)
                    if plain or not repl.ptpython_can_run():
                        history = repl.history_file("plain_history")
                        await repl.plain_shell(namespace, prompt=prompt, history=history, errors=errors)
                    else:
                        history = repl.history_file("shell_history")
                        await repl.ptpython_shell(namespace, prompt=prompt, history=history, errors=errors)
                    code = 0
            finally:
                lost = workspace.uncommitted()
        _farewell(mode, lost, workspace.sandbox.lost if workspace.sandbox else [])
        return code


async def _script(source: str, namespace: dict[str, Any], target: Target) -> int:
    """``-c CODE`` or piped stdin: run it; on an exception print its traceback and return 1."""
    namespace["exit"] = namespace["quit"] = repl.Leave()
    try:
        await execute(source, namespace, SCRIPT)
    except SystemExit as leave:
        code, message = exit_status(leave)
        if message is not None:
            sys.stderr.write(target.redact(message) + "\n")
        return code
    except Exception as exc:
        sys.stderr.write(target.redact(user_traceback(exc, SCRIPT)))
        return 1
    return 0


def _prompt(target: Target, mode: str) -> list[tuple[str, bool]]:
    """``app [mode] key@where ...``: every bind's host and database, those on other machines in red."""
    parts = [(target.app_path + ("" if mode == "normal" else f" [{mode}]"), False)]
    for key, bind in target.plugin.config.bind_configs.items():
        place = locate(bind.resolved_url)
        parts += [(" ", False), (f"{key}@{place.short}", not place.local)]
    return parts


def _greet(workspace: Workspace, renamed: list[str], app_names: AppNames) -> None:
    target = workspace.target
    config, router = target.plugin.config, target.plugin.router
    models = router.models_by_bind()
    described = {
        "normal": "nothing is committed unless you commit",
        "sandbox": "sandbox: everything done through the sessions is rolled back when you leave, commits included",
        "read-only": "read-only: the databases refuse writes",
    }
    if workspace.replica:
        described["read-only"] = "replica: each bind that has replicas is read from one; every database refuses writes"
    main = "routed: each model goes to its bind, as db_session in a request"
    if workspace.main_bind is not None:
        main = f"= {workspace.main_bind}_session (--bind {workspace.main_bind})"
    lines = [("session", main)]
    remote = set()
    for key in router.keys:
        engine = target.plugin.engines.engine(key)
        names = ", ".join(m.class_.__name__ for m in models[key]) or "none"
        default = " (default)" if key == config.default_bind else ""
        place = locate(config.bind_configs[key].resolved_url)
        where = place.where if place.local else f"{place.where} (not this machine)"
        lines.append(
            (
                f"{key}_session",
                f"bind {key}{default}: {engine.dialect.name}+{engine.dialect.driver} at {where}; models: {names}",
            )
        )
        if not place.local:
            remote.add(f"{key}_session")
    if workspace.mode == "sandbox":
        lines.append(("also", "select, insert, update, delete, text, func (no engines: they would bypass the sandbox)"))
    else:
        engines = ", ".join(f"{key}_engine" for key in router.keys)
        lines.append(("also", f"{engines}, engines, select, insert, update, delete, text, func, plugin, app"))
    lines.append(("await sql(...)", 'raw SQL as a table: await sql("select ...", bind="<key>")'))
    lines += [(name, f"{what} (from shell_context)") for name, what in app_names.added]
    notes = [f"renamed: {line}" for line in renamed]
    notes += [f"shell_context's {name!r} was not added: the shell's own {name} comes first" for name in app_names.taken]
    notes.append("top-level await works; exit() or Ctrl-D to leave")
    render.banner(f"litestar db shell · {target.app_path} · {described[workspace.mode]}", lines, notes, alert=remote)


def _farewell(mode: Mode, lost: list[str], dropped: list[str]) -> None:
    if mode == "sandbox":
        how = f" (on {', '.join(map(repr, dropped))} by the server, when the connection was lost)" if dropped else ""
        render.note(f"sandbox closed: everything done through its sessions was rolled back on every bind{how}")
    elif lost:
        render.note(f"not committed, so rolled back: {'; '.join(lost)}")
